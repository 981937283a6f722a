"""``InodeIndex``: socket inode -> entry numbers, in arrays rather than a dict.

A dict of a million inodes costs about 100 bytes an entry (the key object, the
slot, the value object); this costs 20: the keys in one array, an
open-addressing hash table of entry numbers (at most half full, linear
probing) and a chain array for keys that occur more than once (a socket
several processes hold). Callers keep their values in parallel arrays indexed
by entry number.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

_HASH = 0x9E3779B1  # Fibonacci hashing: the top bits of key * this (mod 2**32)


class InodeIndex:
    """Keys appended in order get entry numbers 0, 1, 2...; the hash table is
    (re)built on the first lookup after a change. After ``first``, ``chain[entry]``
    is the next entry with the same key (-1: none)."""

    def __init__(self) -> None:
        self.keys = array("Q")
        self._slots = array("i")  # entry numbers; -1 where free; empty: to be built
        self.chain = array("i")  # the next entry with the same key; -1 at the end
        self._shift = 32

    def __len__(self) -> int:
        return len(self.keys)

    def extend(self, keys: Iterable[int]) -> None:
        self.keys.extend(keys)
        self._slots = array("i")

    def frombytes(self, data: bytes) -> None:
        self.keys.frombytes(data)
        self._slots = array("i")

    def _build(self) -> None:
        keys = self.keys
        bits = max(4, (2 * len(keys)).bit_length())
        size = 1 << bits
        mask, shift = size - 1, 32 - bits
        slots = array("i", [-1]) * size
        nxt = array("i", [-1]) * len(keys)
        for entry, key in enumerate(keys):
            h = ((key * _HASH) & 0xFFFFFFFF) >> shift
            while True:
                other = slots[h]
                if other < 0:
                    slots[h] = entry
                    break
                if keys[other] == key:  # seen before: chained behind the others
                    while nxt[other] >= 0:
                        other = nxt[other]
                    nxt[other] = entry
                    break
                h = (h + 1) & mask
        self._slots, self.chain, self._shift = slots, nxt, shift

    def first(self, key: int) -> int:
        """The first entry with ``key``, or -1."""
        slots = self._slots
        if not slots:
            if not self.keys:
                return -1
            self._build()
            slots = self._slots
        keys = self.keys
        mask = len(slots) - 1
        h = ((key * _HASH) & 0xFFFFFFFF) >> self._shift
        while True:
            entry = slots[h]
            if entry < 0 or keys[entry] == key:
                return entry
            h = (h + 1) & mask

    def entries(self, key: int) -> Iterator[int]:
        """Every entry with ``key``, in the order they were added."""
        entry = self.first(key)
        nxt = self.chain
        while entry >= 0:
            yield entry
            entry = nxt[entry]

    def distinct(self) -> Iterator[int]:
        return iter(dict.fromkeys(self.keys))
