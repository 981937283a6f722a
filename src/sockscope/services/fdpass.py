"""Socket control data: descriptors (SCM_RIGHTS) and credentials (SCM_CREDENTIALS)."""

from __future__ import annotations

import array
import os
import socket
import struct
from collections.abc import Sequence

from sockscope.errors import SockscopeError

_UCRED = struct.Struct("3i")
MAX_FDS = 253  # SCM_MAX_FD: the kernel's limit per message


def send_fds(sock: socket.socket, fds: Sequence[int], data: bytes = b"\0") -> int:
    """Send descriptors with at least one byte of data (a stream needs a byte to carry them)."""
    if not fds:
        raise SockscopeError("no descriptors to send")
    if len(fds) > MAX_FDS:
        raise SockscopeError(f"at most {MAX_FDS} descriptors per message")
    if not data:
        data = b"\0"
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    return sock.sendmsg([data], ancillary)


def recv_fds(sock: socket.socket, bufsize: int = 4096, maxfds: int = MAX_FDS) -> tuple[bytes, list[int]]:
    """Receive data and descriptors (close-on-exec). If the sender sent more than
    ``maxfds`` the kernel dropped the rest: what arrived is closed and an error raised."""
    int_size = array.array("i").itemsize
    flags = getattr(socket, "MSG_CMSG_CLOEXEC", 0)
    data, ancdata, msg_flags, _addr = sock.recvmsg(bufsize, socket.CMSG_SPACE(maxfds * int_size), flags)
    fds: list[int] = []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % int_size
            fds.extend(array.array("i", payload[:usable]))
    if msg_flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise SockscopeError(f"more descriptors arrived than the {maxfds} asked for; all were closed")
    return data, fds


def send_credentials(sock: socket.socket, data: bytes = b"\0",
                     pid: int | None = None, uid: int | None = None, gid: int | None = None) -> int:
    """Send SCM_CREDENTIALS (Linux). The kernel checks them: without privilege a
    process can only send its own pid, uid and gid (the defaults)."""
    cred = _UCRED.pack(os.getpid() if pid is None else pid, os.geteuid() if uid is None else uid,
                       os.getegid() if gid is None else gid)
    return sock.sendmsg([data or b"\0"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, cred)])


def enable_credentials(sock: socket.socket) -> None:
    """Ask the kernel to attach the sender's credentials to every message (SO_PASSCRED)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)


def recv_credentials(sock: socket.socket, bufsize: int = 65536
                     ) -> tuple[bytes, tuple[int, int, int] | None, str | bytes | None]:
    """(data, (pid, uid, gid) or None, sender address) of one message; needs SO_PASSCRED."""
    data, ancdata, _flags, address = sock.recvmsg(bufsize, socket.CMSG_SPACE(_UCRED.size))
    cred = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
            pid, uid, gid = _UCRED.unpack_from(payload)
            cred = (pid, uid, gid)
    return data, cred, address
