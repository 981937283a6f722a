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
