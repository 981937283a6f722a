"""Socket files on disk that no socket is bound to any more (``ls --stale``).

A daemon that dies without unlinking its socket leaves the file behind; the
next start then fails with EADDRINUSE. The kernel reports the device and inode
of every bound unix socket's file (UDIAG_SHOW_VFS), so a file is stale exactly
when no live socket, in any network namespace, names its (device, inode).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_DIRS = ("/tmp", "/run")


@dataclass(slots=True)
class StaleFile:
    path: str
    uid: int
    mode: int
    mtime: float

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "uid": self.uid, "mode": oct(self.mode), "mtime": self.mtime}


def socket_files(dirs: Iterable[str]) -> list[tuple[str, os.stat_result]]:
    """Every socket file under ``dirs`` (symlinks not followed, other filesystems entered)."""
    found: list[tuple[str, os.stat_result]] = []
    for top in dirs:
        for root, subdirs, files in os.walk(top, followlinks=False):
            # A socket file is a directory entry like any other; walk lists it under files.
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISSOCK(st.st_mode):
                    found.append((path, st))
            subdirs.sort()
    return found


def stale_socket_files(dirs: Sequence[str] = DEFAULT_DIRS) -> list[StaleFile]:
    from .query import start

    for d in dirs:
        if not os.path.isdir(d):
            from sockscope.errors import UsageError

            raise UsageError(f"{d}: not a directory")
    # Bound sockets of every namespace: a socket file outlives netns boundaries.
    live = {s.vfs for s in start("unix", all_netns=True, owners=False, check_paths=True).sockets
            if s.vfs is not None}
    return [StaleFile(path, st.st_uid, stat.S_IMODE(st.st_mode), st.st_mtime)
            for path, st in socket_files(dirs) if (st.st_dev, st.st_ino) not in live]
