"""`Policy`: rules in order plus an index, so a decision costs the same with
ten rules or ten thousand.

First match wins. Every rule has its position; the index maps what a client
is (its address under each prefix length in use, its uid, gid, executable) to
the earliest position of a simple rule that matches it, per daemon name and for
ALL. Rules the index cannot hold (EXCEPT, host names, LOCAL...) are tried in
order, but only those before the best indexed match.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sockscope.errors import UsageError

from .patterns import All, Client, Exe, Gid, IPAddress, Network, PatternList, PeerLike, Resolver, Uid
from .syntax import Rule, parse

_NONE = 1 << 62  # "no rule": past any position
_ANY = "\0ALL"
_K = TypeVar("_K")  # daemon key of rules for ALL daemons


@dataclass(slots=True)  # not frozen: a frozen dataclass costs a microsecond more per decision
class Decision:
    """The verdict and the rule that gave it (None when no rule matched)."""

    allowed: bool
    rule: Rule | None
    daemon: str
    subject: object = field(repr=False, compare=False)  # what decide() was given
    default_reason: str = field(default="", repr=False, compare=False)

    @property
    def client(self) -> str:
        return _label(self.subject)

    @property
    def reason(self) -> str:
        rule = self.rule
        return f"{rule.where}: {rule.text}" if rule is not None else self.default_reason

    def to_dict(self) -> dict[str, object]:
        rule = self.rule
        return {
            "daemon": self.daemon,
            "client": self.client,
            "allowed": self.allowed,
            "file": rule.filename if rule else None,
            "line": rule.line if rule else None,
            "rule": rule.text if rule else None,
            "reason": self.reason,
        }


_Nets = tuple[tuple[int, dict[int, int]], ...]


@dataclass
class _View:
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
                position = table.get(value & mask, _NONE)
                if position < best:
                    best = position
        if peer is not None:
            best = min(best, self.uids.get(peer.uid, _NONE), self.gids.get(peer.gid, _NONE))
            if self.exes:
                exe = peer.exe
                if exe is not None:
                    best = min(best, self.exes.get(exe, _NONE))
        return best


def _merge_min(tables: list[dict[_K, int]]) -> dict[_K, int]:
    out: dict[_K, int] = {}
    for table in tables:
        for key, position in table.items():
            if position < out.get(key, _NONE):
                out[key] = position
    return out


class _Index:
    def __init__(self) -> None:
        # daemon key -> version -> prefix length -> {network int: position}
        self.nets: dict[str, dict[int, dict[int, dict[int, int]]]] = {}
        self.any_client: dict[str, int] = {}
        self.uids: dict[str, dict[int, int]] = {}
        self.gids: dict[str, dict[int, int]] = {}
        self.exes: dict[str, dict[str, int]] = {}
        self._views: dict[str, _View] = {}
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

    def view(self, daemon_key: str) -> _View:
        # A daemon no rule names sees only the ALL rules: one shared view.
        key = daemon_key if daemon_key in self._named else _ANY
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = self._build((key, _ANY) if key != _ANY else (_ANY,))
        return view

    def _build(self, keys: tuple[str, ...]) -> _View:
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
        return _View(
            min((self.any_client.get(k, _NONE) for k in keys), default=_NONE),
            nets,
            _merge_min([self.uids.get(k, {}) for k in keys]),
            _merge_min([self.gids.get(k, {}) for k in keys]),
            _merge_min([self.exes.get(k, {}) for k in keys]),
        )


class Policy:
    """Ordered rules with a default for clients no rule matches."""

    def __init__(self, rules: list[Rule], default_allow: bool, default_reason: str) -> None:
        self.rules = rules
        self.default_allow = default_allow
        self.default_reason = default_reason
        self._index = _Index()
        self._linear: list[int] = []
        for position, rule in enumerate(rules):
            daemons, clients = rule.daemons, rule.clients
            simple_daemons = daemons.exclude is None
            if not simple_daemons or clients.exclude is not None:
                self._linear.append(position)
                continue
            keys = ([_ANY] if daemons.any_daemon else []) + sorted(daemons.names)
            indexed_all = True
            for pattern in clients.include:
                for key in keys:
                    indexed_all = self._index.add(key, pattern, position) and indexed_all
            if not indexed_all:
                self._linear.append(position)  # the rest of its patterns are tried in order
        self._index.finish()
        self.uses_exe = any(_has_exe(rule.clients) for rule in rules)

    # -- loading --------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, filename: str = "<policy>") -> Policy:
        """The one-file format: each rule ends in ': allow' or ': deny'; no match refuses."""
        return cls(parse(text, filename, "policy"), False, "no rule matched (a policy refuses by default)")

    @classmethod
    def parse_pair(cls, allow_text: str, deny_text: str, allow_name: str = "hosts.allow",
                   deny_name: str = "hosts.deny") -> Policy:
        """hosts.allow, then hosts.deny, first match wins; no match allows (hosts_access(5))."""
        rules = parse(allow_text, allow_name, "allow") + parse(deny_text, deny_name, "deny")
        return cls(rules, True, "no rule matched in hosts.allow or hosts.deny (access is granted)")

    @classmethod
    def load(cls, path: str | Path | None = None, *, hosts_allow: str | Path | None = None,
             hosts_deny: str | Path | None = None) -> Policy:
        """One policy file, or the classic hosts.allow / hosts.deny pair."""
        if path is not None:
            if hosts_allow is not None or hosts_deny is not None:
                raise UsageError("give either a policy file or hosts.allow/hosts.deny, not both")
            return cls.parse(_read(path), str(path))
        if hosts_allow is None and hosts_deny is None:
            raise UsageError("no policy: give a policy file or hosts.allow/hosts.deny")
        allow = _read(hosts_allow) if hosts_allow is not None else ""
        deny = _read(hosts_deny) if hosts_deny is not None else ""
        return cls.parse_pair(allow, deny, str(hosts_allow or "hosts.allow"), str(hosts_deny or "hosts.deny"))

    # -- deciding -------------------------------------------------------------

    def decide(
        self,
        daemon: str,
        client: Client | IPAddress | str | PeerLike,
        *,
        resolver: Resolver | None = None,
    ) -> Decision:
        """Whether ``client`` may use ``daemon``, and the rule that says so.

        ``client`` is an address (string or ipaddress object), a Unix peer (anything
        with ``uid``, ``gid``, ``exe``) or a `Client`.
        """
        daemon_key = daemon.lower()
        version, value, peer, who = _key_of(client, resolver)
        best = self._index.view(daemon_key).best(version, value, peer)
        rules = self.rules
        for position in self._linear:
            if position >= best:
                break
            rule = rules[position]
            if rule.daemons.matches(daemon_key):
                if who is None:
                    who = _as_client(client, resolver)
                if rule.clients.matches(who):
                    best = position
                    break
        if best == _NONE:
            return Decision(self.default_allow, None, daemon, client, self.default_reason)
        rule = rules[best]
        return Decision(rule.action == "allow", rule, daemon, client)

    def allows(self, daemon: str, client: Client | IPAddress | str | PeerLike) -> bool:
        return self.decide(daemon, client).allowed

    def address_rules(self) -> list[Rule]:
        """Rules in order (for guard, which compiles the address part to nftables)."""
        return list(self.rules)


def _has_exe(patterns: PatternList | None) -> bool:
    if patterns is None:
        return False
    return any(isinstance(p, Exe) for p in patterns.include) or _has_exe(patterns.exclude)


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _as_client(client: Client | IPAddress | str | PeerLike, resolver: Resolver | None) -> Client:
    if isinstance(client, Client):
        if resolver is not None and client.resolver is None:
            client.resolver = resolver
        return client
    if isinstance(client, str):
        try:
            return Client(address=ipaddress.ip_address(client.strip("[]")), resolver=resolver)
        except ValueError:
            raise UsageError(f"not an IP address: {client!r}") from None
    if isinstance(client, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return Client(address=client, resolver=resolver)
    return Client(peer=client, resolver=resolver)


def _key_of(client: object, resolver: Resolver | None) -> tuple[int, int, PeerLike | None, Client | None]:
    """(IP version or 0, address as an int, peer, Client if one was given) without
    building ipaddress objects on the fast path."""
    if isinstance(client, str):
        try:
            if ":" in client:
                value = int.from_bytes(socket.inet_pton(socket.AF_INET6, client.strip("[]")), "big")
                if value >> 32 == 0xFFFF:  # ::ffff:a.b.c.d, a v4 client on a dual-stack socket
                    return 4, value & 0xFFFFFFFF, None, None
                return 6, value, None, None
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, client), "big"), None, None
        except OSError:
            raise UsageError(f"not an IP address: {client!r}") from None
    if isinstance(client, ipaddress.IPv4Address | ipaddress.IPv6Address):
        value = int(client)
        if client.version == 6 and value >> 32 == 0xFFFF:
            return 4, value & 0xFFFFFFFF, None, None
        return client.version, value, None, None
    if isinstance(client, Client):
        if resolver is not None and client.resolver is None:
            client.resolver = resolver
        address = client.address
        if address is None:
            return 0, 0, client.peer, client
        return address.version, int(address), client.peer, client
    return 0, 0, client, None  # type: ignore[return-value]


def _label(client: object) -> str:
    if isinstance(client, str):
        return client
    if isinstance(client, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(client)
    if not isinstance(client, Client):
        client = Client(peer=client)  # type: ignore[arg-type]
    if client.address is not None:
        return str(client.address)
    peer = client.peer
    if peer is not None:
        return f"uid {peer.uid} gid {peer.gid}" + (f" exe {peer.exe}" if peer.exe else "")
    return "unknown"
