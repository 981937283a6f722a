"""``UnixNames``: inode -> bound name of every unix socket of a namespace, packed.

A table names the other end of a unix connection by the name it is bound to
(for a server's accepted socket, the listener's path). Streaming a listing, the
other end may come later in the dump, so the names are learnt first, from a
dump that asks for nothing else. Names repeat (every accepted socket carries
its listener's), so each distinct name is kept once and sockets refer to it by
number: a few bytes a socket rather than an entry in a dict.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from .model import Socket
from .packed import InodeIndex


class UnixNames:
    def __init__(self, sockets: Iterable[Socket]) -> None:
        self._index = InodeIndex()
        self._name_ids = array("I")
        self._names: list[str] = []
        ids: dict[str, int] = {}
        inodes: list[int] = []
        for s in sockets:
            if s.local is None:
                continue
            name = str(s.local)
            number = ids.get(name)
            if number is None:
                number = ids[name] = len(self._names)
                self._names.append(name)
            inodes.append(s.inode)
            self._name_ids.append(number)
        self._index.extend(inodes)

    def get(self, inode: int, default: str | None = None) -> str | None:
        entry = self._index.first(inode)
        return self._names[self._name_ids[entry]] if entry >= 0 else default

    def __len__(self) -> int:
        return len(self._index)
