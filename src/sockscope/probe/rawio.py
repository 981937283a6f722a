"""The Linux socket calls the probes need and Python does not name: raw senders
with IP_HDRINCL / IPV6_HDRINCL, raw and ICMP-datagram receivers, and the
IP_RECVERR / IPV6_RECVERR error queue (``struct sock_extended_err``).

Everything here is a thin wrapper over ``socket``; the packet bytes are built and
parsed elsewhere (``sockscope.packets``).
"""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import errno
import struct

from sockscope.errors import PermissionNeeded
from sockscope.record import Record

IPV6_HDRINCL = 36  # linux/in6.h, absent from Python's socket module
IP_RECVERR = 11
IPV6_RECVERR = 25
IP_RECVTTL = 12
IP_TTL_CMSG = 2  # IP_TTL, the cmsg type carrying a received TTL
IPV6_RECVHOPLIMIT = 51
IPV6_HOPLIMIT = 52
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS has the same number
IP_MTU = 14
IPV6_MTU = 24
IP_MTU_DISCOVER = 10
IPV6_MTU_DISCOVER = 23
SO_BINDTODEVICE = 25
# Path MTU discovery modes (IP_PMTUDISC_*, the same numbers for IPv6), as ping -M names them.
PMTUDISC = {"dont": 0, "want": 1, "do": 2, "probe": 3}
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3

_EXTENDED_ERR = struct.Struct("=IBBBBII")


class QueuedError(Record):
    """One entry of a socket's error queue: an ICMP error about a datagram we sent."""

    _fields = ("errno", "origin", "icmp_type", "icmp_code", "info", "offender", "destination", "payload")
    __slots__ = _fields

    def __init__(
        self,
        errno: int,
        origin: int,
        icmp_type: int,
        icmp_code: int,
        info: int,
        offender: str | None,  # who sent the ICMP error (None for local errors)
        destination: tuple[str, int],  # where the datagram that caused it was going
        payload: bytes,  # the datagram's own payload, as we sent it
    ) -> None:
        self.errno, self.origin, self.icmp_type, self.icmp_code = errno, origin, icmp_type, icmp_code
        self.info, self.offender, self.destination, self.payload = info, offender, destination, payload


def _need(what: str) -> PermissionNeeded:
    return PermissionNeeded(f"{what} needs CAP_NET_RAW (run as root or grant the capability)")


def raw_sender(family: int) -> socket.socket:
    """A raw socket that sends whole IP packets we built (header included)."""
    try:
        sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        raise _need("sending raw packets") from None
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
    return sock


def raw_receiver(family: int, proto: int) -> socket.socket:
    """A non-blocking raw socket receiving every packet of ``proto`` (ICMP, TCP...).
    IPv4 delivers the IP header too; IPv6 delivers from the transport header on, so
    the hop limit comes as ancillary data."""
    try:
        sock = socket.socket(family, socket.SOCK_RAW, proto)
    except PermissionError:
        raise _need("receiving raw packets") from None
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    sock.setblocking(False)
    return sock


def icmp_datagram(family: int) -> socket.socket:
    """An unprivileged ICMP echo socket (``net.ipv4.ping_group_range``)."""
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM, proto)
    except PermissionError:
        raise PermissionNeeded(
            "ping needs CAP_NET_RAW, or a group in net.ipv4.ping_group_range for ICMP datagram sockets"
        ) from None
    enable_ttl_info(sock, family)
    enable_errors(sock, family)
    sock.setblocking(False)
    return sock


def udp_with_errors(family: int) -> socket.socket:
    """An ordinary UDP socket whose ICMP errors are queued for us (as tracepath)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    enable_errors(sock, family)
    enable_ttl_info(sock, family)
    sock.setblocking(False)
    return sock


def enable_errors(sock: socket.socket, family: int, on: bool = True) -> None:
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, int(on))
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, int(on))


def enable_ttl_info(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT, 1)


def set_ttl(sock: socket.socket, family: int, ttl: int) -> None:
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)


def set_tos(sock: socket.socket, family: int, tos: int) -> None:
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)


def set_pmtudisc(sock: socket.socket, family: int, mode: str) -> None:
    """Path MTU discovery for what the kernel sends for us: "dont" (no DF; fragment
    to the path MTU), "want" (the kernel's default: DF unless the packet must be
    fragmented), "do" (DF; too large is EMSGSIZE), "probe" (DF, the interface MTU,
    the learnt path MTU ignored)."""
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC[mode])
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC[mode])


def bind_to(sock: socket.socket, family: int, where: str) -> None:
    """Send from ``where``: an address of this host (bind) or an interface name
    (SO_BINDTODEVICE), as ping -I and traceroute -s / -i take them. Errors are the
    caller's (OSError: no such address or device)."""
    try:
        socket.inet_pton(family, where.split("%")[0])
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, where.encode())
        return
    sock.bind((where, 0))


def ttl_from(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The TTL / hop limit a datagram arrived with, from IP_RECVTTL / IPV6_RECVHOPLIMIT."""
    for level, kind, data in ancdata:
        if (level, kind) in ((socket.IPPROTO_IP, IP_TTL_CMSG), (socket.IPPROTO_IPV6, IPV6_HOPLIMIT)):
            if len(data) >= 4:
                return int.from_bytes(data[:4], "little")
            if data:
                return data[0]
    return None


def timestamp_from(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time (wall clock, seconds) from SO_TIMESTAMPNS, if present."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack_from("=qq", data)
            return float(sec + nsec / 1e9)
    return None


def parse_queued_error(
    ancdata: list[tuple[int, int, bytes]], name: tuple[str, int] | tuple[str, int, int, int], payload: bytes
) -> QueuedError | None:
    """Decode the IP_RECVERR / IPV6_RECVERR control message of an error-queue read."""
    for level, kind, data in ancdata:
        if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            continue
        if len(data) < _EXTENDED_ERR.size:
            return None
        err, origin, icmp_type, icmp_code, _pad, info, _data = _EXTENDED_ERR.unpack_from(data)
        return QueuedError(
            err,
            origin,
            icmp_type,
            icmp_code,
            info,
            _sockaddr_ip(data[_EXTENDED_ERR.size :]),
            (name[0], name[1]),
            payload,
        )
    return None


def _sockaddr_ip(raw: bytes) -> str | None:
    """The address in a sockaddr_in / sockaddr_in6 (SO_EE_OFFENDER), None if unset."""
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], "little")
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def route_mtu(family: int, address: str) -> int | None:
    """The MTU of the interface the route to ``address`` leaves by (no packet sent)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.connect((address, 9))
        if family == socket.AF_INET:
            return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
        return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
    except OSError:
        return None
    finally:
        sock.close()


def too_long_mtu(sock: socket.socket, family: int, data: bytes, address: tuple[object, ...]) -> int | None:
    """The MTU the kernel held ``data`` against when sending it failed with EMSGSIZE
    (the path MTU, or the interface's with "probe"): sent again with the error queue
    on, the local error it queues says (traceroute reads it so). None if it does not."""
    enable_errors(sock, family)
    try:
        sock.sendto(data, address)
    except OSError:
        pass
    try:
        _data, ancdata, _flags, addr = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
        queued = parse_queued_error(ancdata, addr, b"")
    except OSError:
        queued = None
    finally:
        enable_errors(sock, family, False)
    if queued is None or queued.errno != errno.EMSGSIZE or not queued.info:
        return None
    return queued.info


# Errors a send can report because an earlier ICMP error is pending on the socket
# (IP_RECVERR sets sk_err); the datagram was not sent and can simply be sent again.
PENDING_ERRORS = frozenset(
    (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.EPROTO, errno.EACCES)
)
