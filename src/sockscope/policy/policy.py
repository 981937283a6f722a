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

from sockscope.errors import UsageError

from .index import ANY as _ANY
from .index import NONE as _NONE
from .index import Index
from .patterns import (
    Client,
    DomainSuffix,
    Exe,
    HostNamePattern,
    IPAddress,
    Known,
    PatternList,
    PeerLike,
    Resolver,
)
from .syntax import Rule, parse


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


class Policy:
    """Ordered rules with a default for clients no rule matches."""

    def __init__(self, rules: list[Rule], default_allow: bool, default_reason: str) -> None:
        self.rules = rules
        self.default_allow = default_allow
        self.default_reason = default_reason
        self._index = Index()
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
        self.uses_exe = any(_has(rule.clients, (Exe,)) for rule in rules)
        # Rules that need the client's host name (DNS lookups, which block): an
        # asyncio server decides for such a policy in a worker thread.
        self.uses_names = any(_has(rule.clients, (Known, DomainSuffix, HostNamePattern)) for rule in rules)

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
        return cls(rules, True, f"no rule matched in {allow_name} or {deny_name} (access is granted)")

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

        ``client`` is an address (string or ipaddress object), a host name (looked up
        as ``sockscope check`` does: its first address), a Unix peer (anything with
        ``uid``, ``gid``, ``exe``) or a `Client`.
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


def _has(patterns: PatternList | None, kinds: tuple[type, ...]) -> bool:
    if patterns is None:
        return False
    return any(isinstance(p, kinds) for p in patterns.include) or _has(patterns.exclude, kinds)


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
            return Client(address=host_address(client), resolver=resolver)
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
            named = Client(address=host_address(client), resolver=resolver)  # a host name
            return _key_of(named, None)
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


def host_address(name: str) -> IPAddress:
    """The address a host name stands for in a decision: its first address, as
    ``sockscope check`` takes it (tcpdmatch tries each; see docs/differences.md)."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise UsageError(f"{name!r} is neither an address nor a host name that resolves") from None
    return ipaddress.ip_address(str(infos[0][4][0]).split("%")[0])


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
