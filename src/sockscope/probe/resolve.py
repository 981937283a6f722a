"""Names to addresses and back, the source address a route picks, and checks on
the numbers a user gives (TTL, sizes). Errors here are usage errors (exit 2)."""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket

from sockscope.errors import SockscopeError, UsageError
from sockscope.probe import rawio

IP_HEADER: dict[int, int] = {socket.AF_INET: 20, socket.AF_INET6: 40}
MAX_PACKET = 65535


def family_name(family: int) -> str:
    return "IPv4" if family == socket.AF_INET else "IPv6"


def _literal_family(text: str) -> int | None:
    """AF_INET or AF_INET6 when ``text`` is an address literal (inet_pton: the
    ipaddress module would cost every probe command 3 ms of start-up)."""
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, text)
        except (OSError, ValueError):
            continue
        return fam
    return None


def resolve(host: str, family: int | None = None) -> tuple[int, str]:
    """(family, address) of ``host``: a literal address or a name (getaddrinfo).

    ``family`` (AF_INET / AF_INET6) restricts the answer; an address literal of the
    other family is a usage error, as is a name that does not resolve.
    """
    if not host or host.strip() != host:
        raise UsageError(f"bad host {host!r}")
    found = _literal_family(host.split("%", 1)[0])
    if found is not None:
        if family is not None and family != found:
            raise UsageError(
                f"{host} is an {family_name(found)} address, but {family_name(family)} was asked for"
            )
        return found, host
    try:
        infos = socket.getaddrinfo(host, None, family or socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        if family is not None and exc.errno in (socket.EAI_ADDRFAMILY, socket.EAI_NODATA):
            raise UsageError(f"{host} has no {family_name(family)} address") from None
        raise UsageError(f"unknown host {host}") from None
    except UnicodeError:
        raise UsageError(f"bad host name {host!r}") from None
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            return fam, str(sockaddr[0])
    raise UsageError(f"unknown host {host}")


def source_address(family: int, address: str) -> str:
    """The local address the kernel would send from to reach ``address`` (no packet
    leaves: connecting a UDP socket only looks up the route)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect((address, 9))
        return str(sock.getsockname()[0])
    except OSError as exc:
        raise SockscopeError(f"cannot reach {address}: {exc.strerror or exc}") from None
    finally:
        sock.close()


def reverse_name(address: str) -> str | None:
    """The name of ``address`` (reverse lookup), or None."""
    try:
        name, _ = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, UnicodeError):
        return None
    return name


def check_range(what: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise UsageError(f"{what} {value} out of range {low}-{high}")
    return value


def check_positive(what: str, value: float) -> float:
    if not value > 0:
        raise UsageError(f"{what} must be positive, got {value}")
    return value


def check_size(family: int, address: str, size: int, header: int = 8) -> None:
    """A payload of ``size`` must fit the interface the route leaves by, since a
    packet whose header we build ourselves is never fragmented by the kernel."""
    if size < 0:
        raise UsageError(f"size {size} is negative")
    total = IP_HEADER[family] + header + size
    if total > MAX_PACKET:
        raise UsageError(f"size {size} too large: the packet would be {total} bytes (maximum {MAX_PACKET})")
    mtu = rawio.route_mtu(family, address)
    if mtu is not None and total > mtu:
        raise UsageError(f"size {size} too large for the interface: {total}-byte packet, MTU {mtu}")
