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


class NoRoute(SockscopeError):
    """Nothing can be sent: no route to the destination, or the source asked for is
    not this host's. (iputils ping exits 2 for this, traceroute 1.)"""


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
    if not isinstance(host, str):
        raise UsageError(f"host must be a name or address (str), not {type(host).__name__}")
    if family not in (None, socket.AF_INET, socket.AF_INET6):
        raise UsageError(f"family must be AF_INET, AF_INET6 or None, not {family!r}")
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
    except socket.gaierror:
        if family is not None and _resolves(host):
            raise UsageError(f"{host} has no {family_name(family)} address") from None
        raise UsageError(f"unknown host {host}") from None
    except UnicodeError:
        raise UsageError(f"bad host name {host!r}") from None
    for fam, _type, _proto, _canon, sockaddr in infos:
        if fam in (socket.AF_INET, socket.AF_INET6):
            return fam, str(sockaddr[0])
    raise UsageError(f"unknown host {host}")


def _resolves(host: str) -> bool:
    """Does ``host`` have an address of any family?"""
    try:
        return bool(socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_DGRAM))
    except (OSError, UnicodeError):
        return False


def source_address(family: int, address: str, bind: str | None = None) -> str:
    """The local address the kernel would send from to reach ``address``, sending
    from ``bind`` (an address or an interface name) if given. No packet leaves:
    connecting a UDP socket only looks up the route. `NoRoute` if there is none."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if bind is not None:
            try:
                rawio.bind_to(sock, family, bind)
            except OSError as exc:
                raise NoRoute(f"cannot send from {bind}: {exc.strerror or exc}") from None
        sock.connect((address, 9))
        return str(sock.getsockname()[0])
    except OSError as exc:
        raise NoRoute(f"connect: {exc.strerror or exc}") from None
    finally:
        sock.close()


def reverse_name(address: str) -> str | None:
    """The name of ``address`` (reverse lookup), or None."""
    try:
        name, _ = socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, UnicodeError):
        return None
    return name


def check_int(what: str, value: object) -> int:
    """``value`` if it is an integer (not a bool), else a usage error."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{what} must be an integer, not {type(value).__name__} {value!r}")
    return value


def check_number(what: str, value: object) -> float:
    """``value`` if it is a real number (not a bool), else a usage error."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
        raise UsageError(f"{what} must be a number, not {type(value).__name__} {value!r}")
    return value


def check_range(what: str, value: int, low: int, high: int) -> int:
    check_int(what, value)
    if not low <= value <= high:
        raise UsageError(f"{what} {value} out of range {low}-{high}")
    return value


def check_positive(what: str, value: float) -> float:
    check_number(what, value)
    if not value > 0:
        raise UsageError(f"{what} must be positive, got {value}")
    return value


def check_size(family: int, size: int, header: int = 8) -> None:
    """A payload of ``size`` after a ``header``-byte transport header must fit an IP
    packet. Larger than the path MTU is fine: the kernel fragments what it sends
    for ping and trace, as it does for iputils and traceroute."""
    check_int("size", size)
    if size < 0:
        raise UsageError(f"size {size} is negative")
    total = IP_HEADER[family] + header + size
    if total > MAX_PACKET:
        raise UsageError(f"size {size} too large: the packet would be {total} bytes (maximum {MAX_PACKET})")
