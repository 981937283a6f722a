"""Processes and namespaces as the sampler needs them: who made a call, which
processes --pid/--user/--command select, which namespaces they are in, whether
this process may account at all."""

from __future__ import annotations

import os
from collections.abc import Callable

from sockscope.inventory.model import Owner
from sockscope.inventory.owners import all_pids, user_name
from sockscope.inventory.query import ProcessFilter
from sockscope.platform import linux


def caller(pid: int, command: str) -> Owner:
    """The process that made a send or receive call (``command``: the thread's name
    when the call was made, used when the process has gone since; uid None then)."""
    try:
        uid: int | None = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return Owner(pid, command, -1)
    return Owner(pid, comm(pid) or command, -1, user_name(uid) if uid is not None else None, uid)


def start_time(owner: Owner) -> int:
    """A process's start time in clock ticks (0 when it has gone)."""
    try:
        with open(f"/proc/{owner.pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def matching_pids(keep: ProcessFilter) -> list[int]:
    """The processes --pid/--user/--command select now."""
    if keep.pids is not None and keep.uid is None and keep.command is None:
        return sorted(keep.pids)
    found = []
    for pid in sorted(keep.pids) if keep.pids is not None else all_pids():
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if keep(pid, comm(pid) if keep.command is not None else "", uid):
            found.append(pid)
    return found


def split_by_netns(pids: list[int], inodes: set[int]) -> tuple[list[int], list[int]]:
    """``pids`` in two: those in one of these namespaces, and the others."""
    inside: list[int] = []
    outside: list[int] = []
    for pid in pids:
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
        except PermissionError:
            ino = 0  # not ours to look at: left to the scan, which counts it as denied
        except OSError:
            continue  # exited
        (inside if ino in inodes else outside).append(pid)
    return inside, outside


# What the sampler does that root may and others may not: enter namespaces (setns)
# and read other processes' /proc/PID/fd links (a ptrace "read" access check).
_CAPABILITIES = {"CAP_SYS_ADMIN": 21, "CAP_SYS_PTRACE": 19}


def missing_capabilities() -> list[str]:
    """The capabilities accounting needs that this process lacks in its effective
    set (a service may hold them without being root)."""
    try:
        with open("/proc/self/status") as f:
            effective = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError):
        return [] if os.geteuid() == 0 else list(_CAPABILITIES)
    return [name for name, bit in _CAPABILITIES.items() if not effective >> bit & 1]


def still_there(ref: linux.NetnsRef) -> bool:
    """Whether the path a namespace was named by still leads to it."""
    try:
        return os.stat(ref.path).st_ino == ref.inode
    except OSError:
        return False


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return ""


def owner_predicate(keep: ProcessFilter | None) -> Callable[[Owner], bool] | None:
    """The inventory's --pid/--user/--command test, over an Owner."""
    if keep is None:
        return None
    return lambda owner: keep(owner.pid, owner.command, -1 if owner.uid is None else owner.uid)
