"""The decision index: for each daemon (merged with the ALL rules), per prefix
length a dict from network to the earliest rule position, and dicts of uids,
gids and executables, so a lookup costs the same for ten rules or ten thousand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from .patterns import All, Exe, Gid, Network, PeerLike, Uid

NONE = 1 << 62  # "no rule": past any position
ANY = "\0ALL"  # daemon key of rules for ALL daemons
_K = TypeVar("_K")


_Nets = tuple[tuple[int, dict[int, int]], ...]


@dataclass
class View:
    """The index as one daemon sees it: its own rules and the ALL rules merged,
    each entry the earliest position."""

    any_client: int
    nets: dict[int, _Nets]
    uids: dict[int, int]
    gids: dict[int, int]
    exes: dict[str, int]

    def best(self, version: int, value: int, peer: PeerLike | None) -> int:
        best = self.any_client
        if version:
            for mask, table in self.nets.get(version, ()):
                position = table.get(value & mask, NONE)
                if position < best:
                    best = position
        if peer is not None:
            best = min(best, self.uids.get(peer.uid, NONE), self.gids.get(peer.gid, NONE))
            if self.exes:
                exe = peer.exe
                if exe is not None:
                    best = min(best, self.exes.get(exe, NONE))
        return best


def _merge_min(tables: list[dict[_K, int]]) -> dict[_K, int]:
    out: dict[_K, int] = {}
    for table in tables:
        for key, position in table.items():
            if position < out.get(key, NONE):
                out[key] = position
    return out


class Index:
    def __init__(self) -> None:
        # daemon key -> version -> prefix length -> {network int: position}
        self.nets: dict[str, dict[int, dict[int, dict[int, int]]]] = {}
        self.any_client: dict[str, int] = {}
        self.uids: dict[str, dict[int, int]] = {}
        self.gids: dict[str, dict[int, int]] = {}
        self.exes: dict[str, dict[str, int]] = {}
        self._views: dict[str, View] = {}
        self._named: set[str] = set()

    @staticmethod
    def _keep_first(table: dict[_K, int], key: _K, position: int) -> None:
        if key not in table:  # rules are added in order: the first stays
            table[key] = position

    def add(self, key: str, pattern: object, position: int) -> bool:
        """Index one pattern of a simple rule; False if it cannot be indexed."""
        if isinstance(pattern, All):
            self._keep_first(self.any_client, key, position)
        elif isinstance(pattern, Network):
            net = pattern.network
            by_len = self.nets.setdefault(key, {}).setdefault(net.version, {})
            self._keep_first(by_len.setdefault(net.prefixlen, {}), int(net.network_address), position)
        elif isinstance(pattern, Uid):
            self._keep_first(self.uids.setdefault(key, {}), pattern.uid, position)
        elif isinstance(pattern, Gid):
            self._keep_first(self.gids.setdefault(key, {}), pattern.gid, position)
            for uid in pattern.member_uids:
                self._keep_first(self.uids.setdefault(key, {}), uid, position)
        elif isinstance(pattern, Exe):
            self._keep_first(self.exes.setdefault(key, {}), pattern.path, position)
        else:
            return False
        return True

    def finish(self) -> None:
        self._named = set(self.nets) | set(self.any_client) | set(self.uids) | set(self.gids) | set(self.exes)

    def view(self, daemon_key: str) -> View:
        # A daemon no rule names sees only the ALL rules: one shared view.
        key = daemon_key if daemon_key in self._named else ANY
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self._build((key, ANY) if key != ANY else (ANY,))
        return view

    def _build(self, keys: tuple[str, ...]) -> View:
        nets: dict[int, _Nets] = {}
        for version, bits in ((4, 32), (6, 128)):
            by_len: dict[int, list[dict[int, int]]] = {}
            for key in keys:
                for plen, table in self.nets.get(key, {}).get(version, {}).items():
                    by_len.setdefault(plen, []).append(table)
            full = (1 << bits) - 1
            nets[version] = tuple(
                (full ^ ((1 << (bits - plen)) - 1), _merge_min(tables))
                for plen, tables in sorted(by_len.items())
            )
        return View(
            min((self.any_client.get(k, NONE) for k in keys), default=NONE),
            nets,
            _merge_min([self.uids.get(k, {}) for k in keys]),
            _merge_min([self.gids.get(k, {}) for k in keys]),
            _merge_min([self.exes.get(k, {}) for k in keys]),
        )
