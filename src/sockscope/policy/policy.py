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
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sockscope.errors import UsageError

from .patterns import All, Client, Exe, Gid, IPAddress, Network, PeerLike, Resolver, Uid
from .syntax import Rule, parse

_NONE = 1 << 62  # "no rule": past any position
_ANY = "\0ALL"
_K = TypeVar("_K")  # daemon key of rules for ALL daemons


@dataclass(frozen=True)
class Decision:
    """The verdict and the rule that gave it (None when no rule matched)."""

    allowed: bool
    rule: Rule | None
    daemon: str
    client: str
    reason: str

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


class _Index:
    def __init__(self) -> None:
        # daemon key -> version -> [(prefix length, mask, {network int: position})]
        self.nets: dict[str, dict[int, dict[int, dict[int, int]]]] = {}
        self.any_client: dict[str, int] = {}
        self.uids: dict[tuple[str, int], int] = {}
        self.gids: dict[tuple[str, int], int] = {}
        self.exes: dict[tuple[str, str], int] = {}
        # daemon key -> version -> ((mask, table), ...) longest prefix first, built by freeze()
        self.frozen: dict[str, dict[int, tuple[tuple[int, dict[int, int]], ...]]] = {}

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
            self._keep_first(self.uids, (key, pattern.uid), position)
        elif isinstance(pattern, Gid):
            self._keep_first(self.gids, (key, pattern.gid), position)
            for uid in pattern.member_uids:
                self._keep_first(self.uids, (key, uid), position)
        elif isinstance(pattern, Exe):
            self._keep_first(self.exes, (key, pattern.path), position)
        else:
            return False
        return True

    def freeze(self) -> None:
        for key, versions in self.nets.items():
            out = self.frozen.setdefault(key, {})
            for version, by_len in versions.items():
                bits = 32 if version == 4 else 128
                full = (1 << bits) - 1
                out[version] = tuple(
                    (full ^ ((1 << (bits - plen)) - 1), table) for plen, table in sorted(by_len.items())
                )

    def best(self, keys: tuple[str, ...], client: Client) -> int:
        best = _NONE
        address, peer = client.address, client.peer
        value = int(address) if address is not None else 0
        for key in keys:
            position = self.any_client.get(key, _NONE)
            if position < best:
                best = position
            if address is not None:
                for mask, table in self.frozen.get(key, {}).get(address.version, ()):
                    position = table.get(value & mask, _NONE)
                    if position < best:
                        best = position
            if peer is not None:
                best = min(best, self.uids.get((key, peer.uid), _NONE), self.gids.get((key, peer.gid), _NONE))
                if self.exes:
                    exe = peer.exe
                    if exe is not None:
                        best = min(best, self.exes.get((key, exe), _NONE))
        return best


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
        self._index.freeze()

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
        """Whether ``client`` may use ``daemon``, and the rule that says so."""
        who = _as_client(client, resolver)
        daemon_key = daemon.lower()
        best = self._index.best((daemon_key, _ANY), who)
        rules = self.rules
        for position in self._linear:
            if position >= best:
                break
            rule = rules[position]
            if rule.daemons.matches(daemon_key) and rule.clients.matches(who):
                best = position
                break
        label = _label(who)
        if best == _NONE:
            return Decision(self.default_allow, None, daemon, label, self.default_reason)
        rule = rules[best]
        return Decision(rule.action == "allow", rule, daemon, label, f"{rule.where}: {rule.text}")

    def allows(self, daemon: str, client: Client | IPAddress | str | PeerLike) -> bool:
        return self.decide(daemon, client).allowed

    def address_rules(self) -> list[Rule]:
        """Rules in order (for guard, which compiles the address part to nftables)."""
        return list(self.rules)


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


def _label(client: Client) -> str:
    if client.address is not None:
        return str(client.address)
    peer = client.peer
    if peer is not None:
        return f"uid {peer.uid} gid {peer.gid}" + (f" exe {peer.exe}" if peer.exe else "")
    return "unknown"
