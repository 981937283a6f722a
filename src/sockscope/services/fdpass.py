"""Socket control data: descriptors (SCM_RIGHTS) and credentials (SCM_CREDENTIALS)."""

from __future__ import annotations

import array
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sockscope.errors import SockscopeError, UsageError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

_UCRED = struct.Struct("3i")
MAX_FDS = 253  # SCM_MAX_FD: the kernel's limit per message


def send_fds(sock: socket.socket, buffers: Iterable[ReadableBuffer], fds: Sequence[int], flags: int = 0,
             address: object = None) -> int:
    """``socket.send_fds`` of the standard library, with the same arguments and result
    (the number of bytes sent), plus clear errors where the kernel would say little
    or nothing: more than SCM_MAX_FD (253) descriptors, and no data on a stream
    socket (which would send the descriptors nowhere, silently)."""
    buffers = list(buffers)
    if len(fds) > MAX_FDS:
        raise UsageError(f"at most {MAX_FDS} descriptors per message, not {len(fds)}")
    if fds and sock.type == socket.SOCK_STREAM and not any(memoryview(b).nbytes for b in buffers):
        raise UsageError("a stream socket passes descriptors only with at least one byte of data")
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    if address is None:
        return sock.sendmsg(buffers, ancillary, flags)
    return sock.sendmsg(buffers, ancillary, flags, address)  # type: ignore[arg-type]


def recv_fds(sock: socket.socket, bufsize: int, maxfds: int, flags: int = 0
             ) -> tuple[bytes, list[int], int, Any]:
    """``socket.recv_fds`` of the standard library: ``(data, fds, msg_flags, address)``,
    with the descriptors close-on-exec (MSG_CMSG_CLOEXEC) and ``flags`` passed on.
    If the sender sent more than ``maxfds`` (the kernel dropped the rest,
    MSG_CTRUNC), the ones that arrived are closed and SockscopeError raised, rather
    than handing over an incomplete set."""
    if maxfds < 1:
        raise UsageError(f"maxfds must be at least 1, not {maxfds}")
    fds = array.array("i")
    cloexec = getattr(socket, "MSG_CMSG_CLOEXEC", 0) & ~flags  # ours, not reported back
    data, ancdata, msg_flags, address = sock.recvmsg(bufsize, socket.CMSG_LEN(maxfds * fds.itemsize),
                                                     flags | cloexec)
    msg_flags &= ~cloexec
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if msg_flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        raise SockscopeError(f"more descriptors arrived than the {maxfds} asked for; the kernel dropped "
                             f"the rest and the {len(fds)} received were closed")
    return data, list(fds), msg_flags, address


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
