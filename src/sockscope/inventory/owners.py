"""Who holds each socket: one scan of /proc/PID/fd for the whole host.

Socket inodes are unique host-wide (sockfs), so one scan serves every network
namespace. Like ss and lsof we readlink every fd of every process we look at;
unlike them we look only at the processes a --pid/--user/--command filter
allows, so asking for less costs less, and we read a process's command name
only when it holds a socket we were asked about.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from .model import Owner

ProcessPredicate = Callable[[int, str, int], bool]  # (pid, command, uid) -> keep?
# One process's sockets: (pid, command, uid, socket inodes, fd numbers)
Holding = tuple[int, str, int, list[int], list[int]]


@dataclass(slots=True)
class OwnerMap:
    """inode -> holders; ``denied`` counts processes whose fds we could not read."""

    by_inode: dict[int, list[Owner]] = field(default_factory=dict)
    denied: int = 0

    def add(self, holding: Holding, wanted: Collection[int] | None) -> None:
        pid, command, uid, inodes, fds = holding
        user = user_name(uid)
        by_inode = self.by_inode
        for inode, fd in zip(inodes, fds, strict=True):
            if wanted is not None and inode not in wanted:
                continue
            owner = Owner(pid, command, fd, user, uid)
            holders = by_inode.get(inode)
            if holders is None:
                by_inode[inode] = [owner]
            else:
                holders.append(owner)

    def sort(self) -> None:
        for holders in self.by_inode.values():
            if len(holders) > 1:
                holders.sort(key=lambda o: (o.pid, o.fd))


_user_names: dict[int, str | None] = {}


def user_name(uid: int) -> str | None:
    name = _user_names.get(uid, "")
    if name == "":
        import pwd

        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        _user_names[uid] = name
    return name


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "?"


class _Denied:
    """Counts processes whose fds another user's permissions hid from us."""

    count = 0


def iter_holdings(
    process_filter: ProcessPredicate | None = None,
    pids: Collection[int] | None = None,
    denied: _Denied | None = None,
) -> Iterator[Holding]:
    """Each process that holds sockets, with their inodes and fd numbers.

    ``pids``: look only at these processes. ``process_filter`` sees (pid,
    command, uid) before the fds of a process are read, so a filtered-out
    process costs one stat. Processes that exit mid-scan are skipped silently.
    """
    readlink = os.readlink
    listdir = os.listdir
    my_uid = os.geteuid()
    candidates = [int(p) for p in listdir("/proc") if p.isdigit()] if pids is None else list(pids)
    for pid in candidates:
        command: str | None = None
        uid = -1
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            if process_filter is not None:
                command = _command(pid)
                if not process_filter(pid, command, uid):
                    continue
            dirfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            if uid != my_uid and denied is not None:
                denied.count += 1
            continue
        except OSError:  # ENOENT: the process exited
            continue
        inodes: list[int] = []
        fds: list[int] = []
        try:
            names = listdir(dirfd)
            for fd in names:
                try:
                    target = readlink(fd, dir_fd=dirfd)
                except OSError:
                    continue  # closed while we looked
                if target[:8] == "socket:[":  # "socket:[12345]"
                    inodes.append(int(target[8:-1]))
                    fds.append(int(fd))
        except OSError:
            continue
        finally:
            os.close(dirfd)
        if inodes:
            yield pid, command if command is not None else _command(pid), uid, inodes, fds


def scan_owners(
    wanted: Collection[int] | None = None,
    process_filter: ProcessPredicate | None = None,
    pids: Collection[int] | None = None,
) -> OwnerMap:
    """Map socket inodes (only ``wanted`` ones, if given) to the processes holding them."""
    denied = _Denied()
    omap = OwnerMap()
    wanted_set = _as_set(wanted)
    for holding in iter_holdings(process_filter, pids, denied):
        omap.add(holding, wanted_set)
    omap.denied = denied.count
    omap.sort()
    return omap


def _as_set(wanted: Collection[int] | None) -> Collection[int] | None:
    if wanted is None or isinstance(wanted, (set, frozenset)):
        return wanted
    return set(wanted)


_F_SETPIPE_SZ = 1031
_HEADER = 4  # each record: 4-byte little-endian length, then a marshal'd Holding


class BackgroundScan:
    """An owner scan of the whole host started before the sock_diag dump.

    The scan is mostly readlink() system calls; the dump mostly parsing. On a
    machine with two or more cores they overlap when the scan runs in a forked
    child. The child streams one record per process through a pipe made large
    enough that it never waits for us, so when the dump is done the records
    already sent are turned into owners while the child finishes. Where forking
    is unsafe (other threads running) or there is one core, the scan runs in
    process when ``result`` is called, with the same outcome.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._fd = -1
        import threading

        if (os.cpu_count() or 1) < 2 or threading.active_count() > 1:
            return
        read_fd, write_fd = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # a smaller pipe only means the child sometimes waits for us
        pid = os.fork()
        if pid == 0:  # child: scan, send, and leave without running any cleanup
            code = 0
            try:
                os.close(read_fd)
                _stream(write_fd)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        self._pid, self._fd = pid, read_fd

    def result(self, wanted: Collection[int] | None) -> OwnerMap:
        if not self._pid:
            return scan_owners(wanted)
        import marshal

        wanted_set = _as_set(wanted)
        omap = OwnerMap()
        buf = b""
        complete = False
        try:
            while True:
                chunk = os.read(self._fd, 1 << 20)
                if not chunk:
                    break
                buf += chunk
                off = 0
                while len(buf) - off >= _HEADER:
                    size = int.from_bytes(buf[off : off + _HEADER], "little")
                    if len(buf) - off - _HEADER < size:
                        break
                    record = marshal.loads(buf[off + _HEADER : off + _HEADER + size])
                    off += _HEADER + size
                    if isinstance(record, int):  # the last record: processes denied
                        omap.denied = record
                        complete = True
                    else:
                        omap.add(record, wanted_set)
                buf = buf[off:]
        finally:
            os.close(self._fd)
            _, status = os.waitpid(self._pid, 0)
        if status != 0 or not complete:
            return scan_owners(wanted)  # the child failed: do it here
        omap.sort()
        return omap


def _stream(fd: int) -> None:
    import marshal

    me = os.getpid()
    # The child holds copies of all its parent's fds: leave itself out.
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
    denied = _Denied()
    for holding in iter_holdings(None, pids, denied):
        _write_record(fd, marshal.dumps(holding))
    _write_record(fd, marshal.dumps(denied.count))
    os.close(fd)


def _write_record(fd: int, data: bytes) -> None:
    view = memoryview(len(data).to_bytes(_HEADER, "little") + data)
    while view:
        view = view[os.write(fd, view) :]
