"""Unix socket files: the sun_path length limit, stale files, mode from the start.

- The limit is checked before bind or connect, with one message that gives the
  limit, the path's length and the ways out.
- A socket file left by a dead server is replaced; one with a live listener never
  is. A connect test decides, under an exclusive flock on the directory, so two
  sockscope servers starting at once cannot both decide "stale"; the file is
  unlinked only if it is still the inode that failed the test.
- The mode is set by the umask around bind(), so the file never exists with
  wider permissions, even for an instant.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import sys
from collections.abc import Iterator

from sockscope.errors import SockscopeError, UsageError


def path_limit(platform: str = sys.platform) -> int:
    """Longest path in bytes, without the terminating NUL (sun_path is 108 bytes on
    Linux, 104 on the BSDs and macOS; see sys/un.h)."""
    return 107 if platform.startswith("linux") else 103


def check_path_length(path: str, platform: str = sys.platform) -> None:
    size = len(os.fsencode(path))
    limit = path_limit(platform)
    if size <= limit:
        return
    ways = "use a shorter directory, or a relative path after changing into the socket's directory"
    if platform.startswith("linux"):
        ways += ", or an abstract name (unix:@NAME)"
    raise UsageError(f"unix socket path too long: {size} bytes, the limit is {limit} bytes "
                     f"plus the terminating NUL ({limit + 1} bytes of sun_path): {ways}")


def is_live(path: str) -> bool:
    """Whether a socket bound at path accepts or has a peer: a non-blocking connect test.

    ECONNREFUSED means nothing is listening; EPROTOTYPE means a socket of another
    type (datagram, seqpacket) is bound there, which is alive.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        code = probe.connect_ex(path)
    finally:
        probe.close()
    if code == errno.ECONNREFUSED:
        return False
    if code in (0, errno.EAGAIN, errno.EINPROGRESS, errno.EPROTOTYPE):
        return True
    if code == errno.ENOENT:
        return False
    raise SockscopeError(f"{path}: cannot tell whether a server is listening there: {os.strerror(code)}")


@contextlib.contextmanager
def _directory_lock(directory: str) -> Iterator[None]:
    import fcntl

    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise SockscopeError(f"directory {directory} does not exist") from None
    except NotADirectoryError:
        raise SockscopeError(f"{directory} is not a directory") from None
    except PermissionError:
        # Search permission without read: no lock, the inode check still guards.
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def replace_stale(path: str) -> bool:
    """Remove a socket file nothing listens on; True if one was removed.

    Raises if the path is a live socket or not a socket at all.
    """
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:  # no search permission on the way, a loop of links...
        raise _bind_error(path, os.path.dirname(path) or ".", exc) from None
    if not stat.S_ISSOCK(before.st_mode):
        raise SockscopeError(f"{path} exists and is not a socket: not replacing it")
    if is_live(path):
        raise SockscopeError(f"{path}: address in use (a server is listening there)")
    try:
        after = os.lstat(path)
    except FileNotFoundError:
        return False
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        raise SockscopeError(f"{path}: replaced by someone else while being checked; try again")
    os.unlink(path)
    return True


def bind_unix(sock: socket.socket, path: str, mode: int | None = None,
              owner: tuple[int, int] | None = None) -> None:
    """Bind sock to path (replacing a stale file) with the given mode and owner."""
    if path.startswith("@"):
        sock.bind(b"\0" + path[1:].encode())
        return
    check_path_length(path)
    if mode is not None and not 0 <= mode <= 0o777:
        raise UsageError(f"bad socket mode {oct(mode)}: permission bits only (0-0777)")
    directory = os.path.dirname(path) or "."
    with _directory_lock(directory):
        replace_stale(path)
        old_umask = os.umask(0o777 & ~mode) if mode is not None else None
        try:
            sock.bind(path)
        except OSError as exc:
            raise _bind_error(path, directory, exc) from None
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if owner is not None:
            try:
                os.lchown(path, owner[0], owner[1])
            except OSError as exc:
                os.unlink(path)
                raise SockscopeError(f"{path}: cannot set owner: {exc.strerror}") from None


def _bind_error(path: str, directory: str, exc: OSError) -> SockscopeError:
    if exc.errno == errno.EADDRINUSE:
        return SockscopeError(f"{path}: address in use")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return SockscopeError(f"cannot create {path}: no permission to write in directory {directory} "
                              f"or to reach it ({exc.strerror})")
    if exc.errno == errno.EROFS:
        return SockscopeError(f"cannot create {path}: directory {directory} is on a read-only file system")
    if exc.errno == errno.ENOENT:
        return SockscopeError(f"cannot create {path}: directory {directory} does not exist")
    return SockscopeError(f"cannot bind {path}: {exc.strerror}")


def remove_own(path: str, inode: tuple[int, int] | None) -> None:
    """Unlink the socket file at exit, if it is still the one we bound."""
    if inode is None or path.startswith("@"):
        return
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == inode:
            os.unlink(path)


def file_identity(path: str) -> tuple[int, int] | None:
    if path.startswith("@"):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
