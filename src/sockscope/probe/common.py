"""Small pieces ping, trace and scan share: socket addresses, ICMP texts, marks."""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket

from sockscope.probe import rawio
from sockscope.probe.resolve import family_name

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import Any

# ICMP destination-unreachable codes as traceroute marks them.
_MARKS4 = {0: "!N", 1: "!H", 2: "!P", 9: "!X", 10: "!X", 13: "!X", 14: "!V", 15: "!C"}
_MARKS6 = {0: "!N", 1: "!X", 3: "!H", 5: "!S", 6: "!S"}

_UNREACH4 = {
    0: "Destination Net Unreachable",
    1: "Destination Host Unreachable",
    2: "Destination Protocol Unreachable",
    3: "Destination Port Unreachable",
    4: "Frag needed and DF set",
    9: "Destination Net Prohibited",
    10: "Destination Host Prohibited",
    13: "Communication administratively prohibited",
}
_UNREACH6 = {  # iputils ping's words, after "Destination unreachable: "
    0: "No route",
    1: "Administratively prohibited",
    2: "Beyond scope of source address",
    3: "Address unreachable",
    4: "Port unreachable",
    5: "Source address failed ingress/egress policy",
    6: "Reject route to destination",
}


def sockaddr(family: int, address: str, port: int = 0) -> tuple[Any, ...]:
    """What sendto wants for ``address`` (an IPv6 scope id included)."""
    if family == socket.AF_INET:
        return (address, port)
    return socket.getaddrinfo(address, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]


def is_unreachable(family: int, icmp_type: int) -> bool:
    return icmp_type == (3 if family == socket.AF_INET else 1)


def is_time_exceeded(family: int, icmp_type: int) -> bool:
    return icmp_type == (11 if family == socket.AF_INET else 3)


def is_port_unreachable(family: int, icmp_type: int, icmp_code: int) -> bool:
    return is_unreachable(family, icmp_type) and icmp_code == (3 if family == socket.AF_INET else 4)


def unreachable_mark(family: int, code: int) -> str:
    marks = _MARKS4 if family == socket.AF_INET else _MARKS6
    return marks.get(code, f"!<{code}>")


def too_big_mark(mtu: int) -> str:
    """traceroute's mark for "fragmentation needed" / "packet too big"."""
    return f"!F-{mtu}"


def too_big_mtu(family: int, icmp_type: int, icmp_code: int, rest: int) -> int | None:
    """The MTU a "fragmentation needed" (IPv4) or "packet too big" (IPv6) message
    reports, from the 32 bits after its type, code and checksum; None for others."""
    if family == socket.AF_INET:
        return rest & 0xFFFF if icmp_type == 3 and icmp_code == 4 else None
    return rest if icmp_type == 2 else None


def icmp_text(family: int, icmp_type: int, icmp_code: int, mtu: int | None = None) -> str:
    """ping's words for an ICMP error (``mtu``: what a too-big message reports)."""
    if is_time_exceeded(family, icmp_type):
        if family == socket.AF_INET:
            return "Time to live exceeded"
        return "Time exceeded: " + ("Hop limit" if icmp_code == 0 else "Defragmentation failure")
    if mtu is not None:
        if family == socket.AF_INET:
            return f"Frag needed and DF set (mtu = {mtu})"
        return f"Packet too big: mtu={mtu}"
    if is_unreachable(family, icmp_type):
        if family == socket.AF_INET:
            return _UNREACH4.get(icmp_code, f"Dest Unreachable, Bad Code: {icmp_code}")
        return "Destination unreachable: " + _UNREACH6.get(icmp_code, f"Unknown code {icmp_code}")
    return f"{family_name(family)} ICMP type {icmp_type} code {icmp_code}"


def unreach_reason(family: int, code: int) -> str:
    """nmap's reason word for an unreachable code."""
    if family == socket.AF_INET:
        return {
            0: "net-unreach",
            1: "host-unreach",
            2: "proto-unreach",
            3: "port-unreach",
            9: "net-prohibited",
            10: "host-prohibited",
            13: "admin-prohibited",
        }.get(code, f"unreach-code-{code}")
    return {
        0: "net-unreach",
        1: "admin-prohibited",
        3: "host-unreach",
        4: "port-unreach",
        5: "admin-prohibited",
        6: "reject-route",
    }.get(code, f"unreach-code-{code}")


def queued_seq(q: rawio.QueuedError) -> int | None:
    """The sequence of the echo request an ICMP datagram socket's error-queue entry
    quotes (None for a local error or a quote too short)."""
    if len(q.payload) < 8 or q.origin == rawio.SO_EE_ORIGIN_LOCAL:
        return None
    return int.from_bytes(q.payload[6:8], "big")
