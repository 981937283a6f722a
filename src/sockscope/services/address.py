"""Endpoint addresses as written on the command line: ``tcp:HOST:PORT``,
``udp:HOST:PORT``, ``unix:/path``, ``unix:@abstract``, ``unix-dgram:...``,
``unix-seqpacket:...``. IPv6 hosts go in brackets: ``tcp:[::1]:8080``. A port
is a number or a service name (``tcp:HOST:http``, from /etc/services)."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Literal

from sockscope.errors import UsageError

Kind = Literal["tcp", "udp", "unix", "unix-dgram", "unix-seqpacket"]
KINDS: tuple[Kind, ...] = ("tcp", "udp", "unix", "unix-dgram", "unix-seqpacket")
_TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM, "unix": socket.SOCK_STREAM,
          "unix-dgram": socket.SOCK_DGRAM, "unix-seqpacket": socket.SOCK_SEQPACKET}


@dataclass(frozen=True)
class Endpoint:
    """One parsed address. ``path`` starts with '@' for a Linux abstract name."""

    kind: Kind
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def is_unix(self) -> bool:
        return self.kind.startswith("unix")

    @property
    def abstract(self) -> bool:
        return self.is_unix and self.path.startswith("@")

    @property
    def socktype(self) -> int:
        return _TYPES[self.kind]

    @property
    def stream(self) -> bool:
        return self.socktype != socket.SOCK_DGRAM

    def unix_address(self) -> str | bytes:
        """The address for bind/connect: a path, or NUL + name for an abstract one."""
        if self.abstract:
            return b"\0" + self.path[1:].encode()
        return self.path

    def __str__(self) -> str:
        if self.is_unix:
            return f"{self.kind}:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        raise UsageError(f"bad address {text!r}: want one of tcp:HOST:PORT, udp:HOST:PORT, "
                         "unix:/path, unix:@name, unix-dgram:..., unix-seqpacket:...")
    if kind.startswith("unix"):
        if not rest:
            raise UsageError(f"bad address {text!r}: no path")
        if rest.startswith("@"):
            if not sys.platform.startswith("linux"):
                raise UsageError("abstract socket names (@name) exist only on Linux")
            if len(rest) - 1 > 107:
                raise UsageError(f"abstract name too long: {len(rest) - 1} bytes (at most 107)")
        if "\0" in rest:
            raise UsageError("a socket path cannot contain a NUL byte")
        return Endpoint(kind, path=rest)
    host, port_text = _split_host_port(rest, text)
    return Endpoint(kind, host=host, port=parse_port(port_text, kind, text))


def parse_port(text: str, proto: str, where: str | None = None) -> int:
    """A port number (0-65535) or a service name for proto ("tcp" or "udp")."""
    where = f" in {where!r}" if where is not None and where != text else ""
    if text.isdigit():
        if int(text) <= 65535:
            return int(text)
        raise UsageError(f"bad port {text!r}{where} (0-65535)")
    try:
        return socket.getservbyname(text, proto)
    except (OSError, ValueError):  # ValueError: a NUL or a surrogate in the name
        pass
    raise UsageError(f"bad port {text!r}{where}: neither a number (0-65535) nor a {proto} service "
                     "name of /etc/services")


def _split_host_port(rest: str, text: str) -> tuple[str, str]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise UsageError(f"bad address {text!r}: want [IPv6]:PORT")
        return host, tail[1:]
    if rest.count(":") > 1:
        raise UsageError(f"bad address {text!r}: IPv6 addresses go in brackets, e.g. tcp:[::1]:8080")
    host, sep, port = rest.rpartition(":")
    return (host, port) if sep else ("", rest)


SockAddr = tuple[str, int] | tuple[str, int, int, int]


def resolve_inet(endpoint: Endpoint, *, passive: bool,
                 family: int = socket.AF_UNSPEC) -> list[tuple[int, SockAddr]]:
    """(family, sockaddr) candidates for an INET endpoint; an empty host means any
    address when listening (IPv6 dual-stack first) and loopback when connecting.
    ``family`` AF_INET or AF_INET6 keeps to one (nc -4 / -6)."""
    flags = socket.AI_PASSIVE if passive else 0
    host: str | None = endpoint.host or None
    try:
        infos = socket.getaddrinfo(host, endpoint.port, family, endpoint.socktype, 0, flags)
    except socket.gaierror as exc:
        only = {int(socket.AF_INET): " as IPv4", int(socket.AF_INET6): " as IPv6"}.get(family, "")
        raise UsageError(f"cannot resolve {endpoint.host or 'any'!r}{only}: {exc.strerror}") from None
    out: list[tuple[int, SockAddr]] = []
    for fam, _type, _proto, _name, sockaddr in infos:
        if isinstance(sockaddr[0], str):
            out.append((int(fam), sockaddr))
    if passive and host is None:
        out.sort(key=lambda item: item[0] != socket.AF_INET6)
    return out
