"""Who holds each socket: one scan of /proc/PID/fd for the whole host.

Socket inodes are unique host-wide (sockfs), so one scan serves every network
namespace. Like ss and lsof we readlink every fd of every process we look at;
unlike them we look only at the processes a --pid/--user/--command filter
allows, so asking for less costs less, and we read a process's command name
and user only when it holds a socket we were asked about.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from .model import Owner

ProcessPredicate = Callable[[int, str, int], bool]  # (pid, command, uid) -> keep?


@dataclass(slots=True)
class OwnerMap:
    """inode -> holders; ``denied`` counts processes whose fds we could not read."""

    by_inode: dict[int, list[Owner]] = field(default_factory=dict)
    denied: int = 0


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


def scan_owners(
    wanted: Collection[int] | None = None,
    process_filter: ProcessPredicate | None = None,
    pids: Collection[int] | None = None,
) -> OwnerMap:
    return _restrict(_scan(wanted, process_filter, pids), wanted)


def _restrict(omap: OwnerMap, wanted: Collection[int] | None) -> OwnerMap:
    if wanted is None:
        return omap
    by_inode = omap.by_inode
    return OwnerMap({i: by_inode[i] for i in wanted if i in by_inode}, omap.denied)


def _scan(
    wanted: Collection[int] | None,
    process_filter: ProcessPredicate | None,
    pids: Collection[int] | None,
) -> OwnerMap:
    """Map socket inodes to the processes holding them.

    ``wanted``: only record these inodes (None: every socket). ``pids``: look
    only at these processes. ``process_filter`` sees (pid, command, uid) before
    the fds of a process are read, so filtered-out processes cost one stat.
    Processes that exit mid-scan are skipped silently, as a user would want.
    """
    result = OwnerMap()
    by_inode = result.by_inode
    readlink = os.readlink
    listdir = os.listdir
    wanted_set = set(wanted) if wanted is not None and not isinstance(wanted, (set, frozenset)) else wanted
    my_uid = os.geteuid()
    if pids is None:
        candidates = [int(p) for p in listdir("/proc") if p.isdigit()]
    else:
        candidates = list(pids)
    for pid in candidates:
        command: str | None = None
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            if process_filter is not None:
                command = _command(pid)
                if not process_filter(pid, command, uid):
                    continue
            dirfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # the process exited
        except PermissionError:
            if uid != my_uid:
                result.denied += 1
            continue
        except OSError:
            continue
        try:
            try:
                fds = listdir(dirfd)
            except OSError:
                continue
            found: list[tuple[int, int]] = []
            for fd in fds:
                try:
                    target = readlink(fd, dir_fd=dirfd)
                except OSError:
                    continue  # closed while we looked
                # "socket:[12345]"
                if target[:8] != "socket:[":
                    continue
                inode = int(target[8:-1])
                if wanted_set is None or inode in wanted_set:
                    found.append((inode, int(fd)))
        finally:
            os.close(dirfd)
        if not found:
            continue
        if command is None:
            command = _command(pid)
        user = user_name(uid)
        for inode, fd_num in found:
            owner = Owner(pid, command, fd_num, user, uid)
            holders = by_inode.get(inode)
            if holders is None:
                by_inode[inode] = [owner]
            else:
                holders.append(owner)
    for holders in by_inode.values():
        if len(holders) > 1:
            holders.sort(key=lambda o: (o.pid, o.fd))
    return result


class BackgroundScan:
    """An owner scan of the whole host started before the sock_diag dump.

    The scan is mostly readlink() system calls; the dump is mostly parsing.
    On a machine with two or more cores they overlap when the scan runs in a
    forked child that sends its findings back through a pipe. Where forking is
    unsafe (other threads running) or there is one core, the scan runs in
    process when ``result`` is called, with the same outcome.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._fd = -1
        import threading

        if (os.cpu_count() or 1) < 2 or threading.active_count() > 1:
            return
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: scan, send, and leave without running any cleanup
            code = 0
            try:
                os.close(read_fd)
                # The child holds copies of all its parent's fds: leave itself out.
                me = os.getpid()
                pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
                _send(write_fd, _scan(None, None, pids))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        self._pid, self._fd = pid, read_fd

    def result(self, wanted: Collection[int] | None) -> OwnerMap:
        if not self._pid:
            return scan_owners(wanted)
        chunks = []
        try:
            while True:
                chunk = os.read(self._fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self._fd)
            _, status = os.waitpid(self._pid, 0)
        if status != 0:
            return scan_owners(wanted)  # the child failed: do it here
        return _restrict(_receive(b"".join(chunks)), wanted)


def _send(fd: int, omap: OwnerMap) -> None:
    import marshal

    rows = [(inode, o.pid, o.fd, o.command, o.uid) for inode, holders in omap.by_inode.items()
            for o in holders]
    data = marshal.dumps((rows, omap.denied))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


def _receive(data: bytes) -> OwnerMap:
    import marshal

    rows, denied = marshal.loads(data)
    by_inode: dict[int, list[Owner]] = {}
    for inode, pid, fd, command, uid in rows:
        owner = Owner(pid, command, fd, user_name(uid), uid)
        holders = by_inode.get(inode)
        if holders is None:
            by_inode[inode] = [owner]
        else:
            holders.append(owner)
    return OwnerMap(by_inode, denied)
