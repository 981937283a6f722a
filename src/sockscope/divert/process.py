"""A divert's ties to its process: what a forked child must let go of, and how to
tell a process from a later one that reuses its pid."""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class _Forgettable(Protocol):
    def forget(self) -> None: ...


# A forked child must not keep the parent's divert alive: an owned nft table lives as
# long as any process holds its socket, and a queue stays bound (its packets waiting
# for verdicts nobody gives) while any process holds the queue's socket. Children let
# go of both at once (subprocesses lose them anyway: the sockets are close-on-exec).
_held: weakref.WeakSet[_Forgettable] = weakref.WeakSet()


def forget_in_children(obj: _Forgettable) -> None:
    _held.add(obj)


def _forget_in_child() -> None:
    for obj in list(_held):
        obj.forget()


os.register_at_fork(after_in_child=_forget_in_child)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot): tells a pid from its reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) if fields[0] not in ("Z", "X") else None
