"""Client and daemon patterns of hosts_access(5), plus the Unix peer patterns.

A pattern is a small frozen dataclass with ``matches(client)``. The ones the
decision index can look up directly (networks, uids, gids, executables, ALL)
say so through their type; the rest (names, wildcards, LOCAL...) are tried in
order by `Policy.decide`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerLike(Protocol):
    """What a Unix peer rule looks at (`sockscope.services.PeerCredentials` is one)."""

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...

    @property
    def exe(self) -> str | None: ...


@dataclass(frozen=True)
class HostName:
    """A client's host name from a reverse lookup; ``verified`` when the name's
    forward lookup gives the client's address back (tcp_wrappers' double check)."""

    name: str
    verified: bool


Resolver = Callable[[IPAddress], HostName | None]


@dataclass
class Client:
    """Who is asking: an address (TCP, UDP) or a Unix peer, maybe both unknown.

    The host name is looked up only if a rule needs it, and at most once.
    """

    address: IPAddress | None = None
    peer: PeerLike | None = None
    resolver: Resolver | None = None
    _host: HostName | None = field(default=None, init=False, repr=False)
    _looked_up: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        # A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        if isinstance(self.address, ipaddress.IPv6Address) and self.address.ipv4_mapped is not None:
            self.address = self.address.ipv4_mapped

    @property
    def host(self) -> HostName | None:
        if not self._looked_up:
            self._looked_up = True
            if self.address is not None:
                self._host = (self.resolver or resolve_host)(self.address)
        return self._host

    @property
    def verified_name(self) -> str | None:
        host = self.host
        return host.name.lower() if host is not None and host.verified else None


def resolve_host(address: IPAddress) -> HostName | None:
    """Reverse lookup, then a forward lookup of that name that must give the address back."""
    import socket

    try:
        name = socket.gethostbyaddr(str(address))[0]
    except OSError:
        return None
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return HostName(name, False)
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    return HostName(name, address in addresses)


class Pattern(Protocol):
    @property
    def text(self) -> str: ...

    def matches(self, client: Client) -> bool: ...


@dataclass(frozen=True)
class All:
    text: str = "ALL"

    def matches(self, client: Client) -> bool:
        return True


@dataclass(frozen=True)
class Network:
    """An address, a dotted prefix (``192.168.``), ``a.b.c.d/m.m.m.m``, CIDR or ``[v6]/len``."""

    text: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    def matches(self, client: Client) -> bool:
        address = client.address
        return address is not None and address.version == self.network.version and address in self.network


@dataclass(frozen=True)
class Netmask:
    """``a.b.c.d/m.m.m.m`` with a mask that is not a prefix (legal in tcp_wrappers)."""

    text: str
    address: int
    mask: int

    def matches(self, client: Client) -> bool:
        address = client.address
        return address is not None and address.version == 4 and int(address) & self.mask == self.address


@dataclass(frozen=True)
class Uid:
    text: str
    uid: int

    def matches(self, client: Client) -> bool:
        return client.peer is not None and client.peer.uid == self.uid


@dataclass(frozen=True)
class Gid:
    """``gid:N`` or ``group:NAME``: the peer's group, or a user listed as a member."""

    text: str
    gid: int
    member_uids: frozenset[int] = frozenset()

    def matches(self, client: Client) -> bool:
        peer = client.peer
        return peer is not None and (peer.gid == self.gid or peer.uid in self.member_uids)


@dataclass(frozen=True)
class Exe:
    text: str
    path: str

    def matches(self, client: Client) -> bool:
        return client.peer is not None and client.peer.exe == self.path


@dataclass(frozen=True)
class Local:
    """LOCAL: a host name without a dot; a Unix peer is local too."""

    text: str = "LOCAL"

    def matches(self, client: Client) -> bool:
        if client.peer is not None:
            return True
        name = client.verified_name
        return name is not None and "." not in name


@dataclass(frozen=True)
class Known:
    """KNOWN / UNKNOWN / PARANOID: whether the host name is known and checks out."""

    text: str

    def matches(self, client: Client) -> bool:
        if client.address is None:
            return False
        host = client.host
        if self.text == "KNOWN":
            return host is not None and host.verified
        if self.text == "UNKNOWN":
            return host is None
        return host is not None and not host.verified  # PARANOID


@dataclass(frozen=True)
class DomainSuffix:
    """``.example.com``: a verified host name ending in it."""

    text: str

    def matches(self, client: Client) -> bool:
        name = client.verified_name
        return name is not None and name.endswith(self.text.lower())


@dataclass(frozen=True)
class HostNamePattern:
    """A host name, maybe with ``*``/``?`` wildcards, matched against the verified name;
    wildcards also match the address as written."""

    text: str

    def matches(self, client: Client) -> bool:
        pattern = self.text.lower()
        wild = "*" in pattern or "?" in pattern
        if wild and client.address is not None and fnmatch.fnmatchcase(str(client.address), pattern):
            return True
        name = client.verified_name
        if name is None:
            return False
        return fnmatch.fnmatchcase(name, pattern) if wild else name == pattern


@dataclass(frozen=True)
class PatternList:
    """``a b c EXCEPT d e``: any of ``include`` and none of ``exclude`` (itself a list)."""

    include: tuple[Pattern, ...]
    exclude: PatternList | None = None

    def matches(self, client: Client) -> bool:
        if not any(p.matches(client) for p in self.include):
            return False
        return self.exclude is None or not self.exclude.matches(client)


@dataclass(frozen=True)
class DaemonList:
    """Daemon names (lower case) or ALL, with an optional EXCEPT list."""

    names: frozenset[str]
    any_daemon: bool
    exclude: DaemonList | None = None

    def matches(self, daemon: str) -> bool:
        if not (self.any_daemon or daemon in self.names):
            return False
        return self.exclude is None or not self.exclude.matches(daemon)
