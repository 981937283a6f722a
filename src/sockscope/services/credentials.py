"""Who is at the other end of a Unix socket: `peer_credentials(sock)`.

Linux gives pid, uid and gid (SO_PEERCRED) and, since 6.5, a pidfd for the
peer process (SO_PEERPIDFD, 77, no Python constant). The executable and the
command name are read from /proc/PID only while the pidfd shows that PID is
still the peer (its fdinfo says ``Pid: -1`` once the process is gone and the
number may be reused), so a recycled pid cannot lend its executable to a
check. Without a pidfd the executable stays unknown rather than unverified.
BSD and macOS answer through getpeereid / LOCAL_PEERCRED (``_xucred``).
"""

from __future__ import annotations

import _socket
import os
import socket
import struct
import sys
import weakref

from sockscope.errors import SockscopeError

SO_PEERPIDFD = 77
_UCRED = struct.Struct("3i")
# struct xucred (sys/ucred.h): cr_version, cr_uid, cr_ngroups, cr_groups[16]
_XUCRED = struct.Struct("IIh2x16I")
LOCAL_PEERCRED = 1  # level SOL_LOCAL (0) on FreeBSD and macOS


class PeerCredentials:
    """The peer process of a Unix socket. ``pid`` is 0 when unknown (BSD).

    ``pidfd``, ``exe`` and ``comm`` are taken on first use, so a check that does
    not need them does not pay for them: the pidfd from the socket (SO_PEERPIDFD,
    which names the process that connected even if it has exited since), the
    executable and command name through it. The pidfd is owned by this object:
    `close` (or ``with``) releases it, and so does garbage collection; after
    `close` nothing new is learnt.

    A plain class with slots: one is built per connection a server checks.
    """

    __slots__ = ("_closed", "_identity", "_pidfd", "_source", "gid", "pid", "uid")

    def __init__(self, pid: int, uid: int, gid: int, pidfd: int | None = None, *,
                 source: socket.socket | None = None) -> None:
        self.pid, self.uid, self.gid = pid, uid, gid
        self._pidfd = pidfd
        # The socket to take the pidfd from when first asked; weak, so a closed or
        # dropped connection is not kept open for it.
        self._source = weakref.ref(source) if source is not None and pidfd is None else None
        self._identity: tuple[str | None, str | None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"PeerCredentials(pid={self.pid}, uid={self.uid}, gid={self.gid}, pidfd={self._pidfd})"

    @property
    def pidfd(self) -> int | None:
        """A pidfd of the peer process (None where the kernel has none to give)."""
        if self._pidfd is None and self._source is not None and not self._closed:
            sock = self._source()
            self._source = None
            if sock is not None and sock.fileno() >= 0:
                self._pidfd = _peer_pidfd(sock)
        return self._pidfd

    def _identify(self) -> tuple[str | None, str | None]:
        if self._identity is None:
            pidfd = self.pidfd
            self._identity = (None, None) if pidfd is None or self._closed else _identify(self.pid, pidfd)
        return self._identity

    @property
    def exe(self) -> str | None:
        """The peer's executable, verified to belong to the peer (None if unknown)."""
        return self._identify()[0]

    @property
    def comm(self) -> str | None:
        return self._identify()[1]

    def close(self) -> None:
        """Release the pidfd. What was learnt (exe, comm) stays; nothing new is."""
        if self._closed:
            return
        self._closed = True
        self._source = None
        if self._pidfd is not None:
            pidfd, self._pidfd = self._pidfd, None
            os.close(pidfd)

    def __del__(self) -> None:
        # A caller that drops the credentials without closing them (the common
        # `conn, _ = server.accept()`) must not leak a descriptor per connection.
        if hasattr(self, "_closed"):  # not when __init__ itself failed
            self.close()

    def __enter__(self) -> PeerCredentials:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "uid": self.uid, "gid": self.gid, "exe": self.exe, "comm": self.comm,
                "pidfd": self.pidfd is not None}


# socket.socket.family wraps the number in an enum on every access (about a
# microsecond); the C attribute underneath gives the plain int.
_raw_family = _socket.socket.family


def family_of(sock: socket.socket) -> int:
    return int(_raw_family.__get__(sock))


def peer_credentials(sock: socket.socket, *, pidfd: bool = True) -> PeerCredentials:
    """Credentials of the process that connected (or bound, for a datagram pair).

    ``pidfd=False`` postpones SO_PEERPIDFD (about half the cost) to the first use
    of ``pidfd``, ``exe`` or ``comm``, while the socket is still open.
    """
    if family_of(sock) != socket.AF_UNIX:
        raise SockscopeError("peer credentials exist only for Unix-domain sockets")
    on_linux = sys.platform.startswith("linux")
    return _linux(sock, pidfd) if on_linux else _bsd(sock)


def _linux(sock: socket.socket, want_pidfd: bool = True) -> PeerCredentials:
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError as exc:
        raise SockscopeError(f"cannot read peer credentials: {exc.strerror}") from None
    pid, uid, gid = _UCRED.unpack(raw)
    if not want_pidfd:
        return PeerCredentials(pid, uid, gid, source=sock)  # the pidfd when first asked for
    return PeerCredentials(pid, uid, gid, _peer_pidfd(sock))


def _peer_pidfd(sock: socket.socket) -> int | None:
    """SO_PEERPIDFD; the kernel makes it close-on-exec."""
    try:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, 4), sys.byteorder, signed=True)
    except OSError:
        return None  # before Linux 6.5 (ENOPROTOOPT), or no peer process (ENODATA, ESRCH)


def pidfd_pid(pidfd: int) -> int:
    """The pid a pidfd refers to, -1 once that process has exited (fdinfo ``Pid:``)."""
    try:
        with open(f"/proc/self/fdinfo/{pidfd}") as f:
            for line in f:
                if line.startswith("Pid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _identify(pid: int, pidfd: int) -> tuple[str | None, str | None]:
    if pid <= 0 or pidfd_pid(pidfd) != pid:
        return None, None
    exe = comm = None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        pass  # another user's process without privilege, or a kernel thread
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().rstrip("\n")
    except OSError:
        pass
    # Read first, verify after: if the pid still names the pidfd's process, what
    # we read belonged to it (a pid is not reused while its process exists).
    if pidfd_pid(pidfd) != pid:
        return None, None
    if exe is not None and exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    return exe, comm


def process_credentials(pid: int) -> PeerCredentials:
    """The same record for a running process (``sockscope check ... pid:N``), via a pidfd."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        raise SockscopeError(f"pid {pid}: {exc.strerror}") from None
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        uid = int(fields["Uid"].split()[1])  # effective, as SO_PEERCRED reports
        gid = int(fields["Gid"].split()[1])
    except (OSError, KeyError, ValueError):
        os.close(pidfd)
        raise SockscopeError(f"pid {pid}: cannot read its credentials") from None
    return PeerCredentials(pid, uid, gid, pidfd)


def parse_xucred(raw: bytes) -> tuple[int, int]:
    """(uid, gid) from LOCAL_PEERCRED's struct xucred; gid is the first group."""
    _version, uid, ngroups, *groups = _XUCRED.unpack_from(raw.ljust(_XUCRED.size, b"\0"))
    return uid, groups[0] if ngroups > 0 else -1


def _bsd(sock: socket.socket) -> PeerCredentials:
    try:
        raw = sock.getsockopt(0, LOCAL_PEERCRED, _XUCRED.size)
    except OSError as exc:
        raise SockscopeError(f"cannot read peer credentials: {exc.strerror}") from None
    uid, gid = parse_xucred(raw)
    return PeerCredentials(0, uid, gid)
