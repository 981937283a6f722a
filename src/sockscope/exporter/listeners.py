"""Who holds each listening socket, without walking /proc at every scrape.

Finding a socket's processes means reading every descriptor of every process
(the /proc/*/fd walk ss and lsof do), the largest part of a collection. Listeners
live long and their holders rarely change, so the holders found by one walk are
kept and checked at the next collection with one readlink each
(/proc/PID/fd/FD still ``socket:[INODE]``). A new walk happens only when a
listener appears that has not been looked up, when a known holder has closed it
or exited, and at least every ``refresh`` seconds (a process that inherited a
listener by fork since is then found).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection

from sockscope.inventory.owners import scan_owners

Holder = tuple[int, int, str]  # pid, fd, command


class ListenerOwners:
    """Listener inode -> holders, kept across collections (see the module's docstring)."""

    def __init__(self, refresh: float = 60.0) -> None:
        self.refresh = refresh
        self._known: dict[int, list[Holder]] = {}
        self._walked = -float("inf")
        self.walks = 0  # how many /proc walks were made (the benchmark reports it)

    def commands(self, inodes: Collection[int]) -> dict[int, set[str]]:
        """inode -> the commands of the processes holding it (empty: none seen)."""
        wanted = set(inodes)
        if not wanted:
            return {}  # no listener: nothing to look up, no walk
        now = time.monotonic()
        if (now - self._walked >= self.refresh or not wanted <= self._known.keys()
                or not all(_still_held(inode, h) for inode in wanted for h in self._known[inode])):
            self._walk(wanted, now)
        return {inode: {command for _, _, command in self._known.get(inode, ())} for inode in wanted}

    def _walk(self, wanted: set[int], now: float) -> None:
        omap = scan_owners(wanted)
        self._known = {inode: [(o.pid, o.fd, o.command) for o in omap.holders(inode)] for inode in wanted}
        self._walked = now
        self.walks += 1


def _still_held(inode: int, holder: Holder) -> bool:
    pid, fd, _ = holder
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
    except OSError:
        return False
