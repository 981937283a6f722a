"""What a reply to a trace probe means: which probe it answers (the key), whether
the destination was reached, the traceroute mark, and what the quoted packet
shows about the path (-v). Sans-IO: works on `Received` messages only."""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import struct

from sockscope.packets import ACK, ICMP, RST, SYN, TCP, UDP, ICMPv6, IPv4, IPv6
from sockscope.packets.ipv6 import EXTENSION_CLASSES
from sockscope.probe import rawio
from sockscope.probe.common import (
    is_port_unreachable,
    is_time_exceeded,
    is_unreachable,
    too_big_mark,
    too_big_mtu,
    unreachable_mark,
)
from sockscope.probe.engine import OWN, Received

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Hashable

PROTO = {"udp": socket.IPPROTO_UDP, "tcp": socket.IPPROTO_TCP}
ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}
UDP_ANSWER = "udp-answer"  # the key of a UDP datagram from the destination's probed port


def quoted_transport(icmp: ICMP | ICMPv6) -> tuple[IPv4 | IPv6, int, bytes] | None:
    """The quoted IP header, the protocol of what it carries, and the raw bytes of
    that (often only 8 of them). IPv6 extension headers are stepped over: a probe the
    kernel fragmented is quoted with its fragment header."""
    quoted = icmp.quoted
    packet = icmp.quoted_packet
    if not isinstance(quoted, IPv4 | IPv6) or packet is None:
        return None
    if isinstance(quoted, IPv4):
        return quoted, quoted.proto, packet.data[quoted.header_len :]
    offset, proto = quoted.header_len, quoted.next_header
    for layer in packet.layers[1:]:
        if not isinstance(layer, EXTENSION_CLASSES):
            break
        offset += layer.header_len
        proto = layer.next_header
    return quoted, proto, packet.data[offset:]


class TraceMatcher:
    def __init__(
        self,
        family: int,
        address: str,
        method: str,
        sport: int,
        dport: int,
        ident: int,
        seq_base: int,
        tos: int,
    ) -> None:
        self.family, self.address, self.method = family, address, method
        self.sport, self.dport, self.ident, self.seq_base, self.tos = sport, dport, ident, seq_base, tos
        self.icmp_checksum = (0xA5A5 ^ ident) or 1
        self.syn_data = 0  # data bytes a TCP probe carries after its SYN
        self.proto = PROTO.get(
            method, socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        )

    def __call__(self, got: Received) -> Hashable | None:
        if got.queued is not None:
            q = got.queued
            if q.origin == rawio.SO_EE_ORIGIN_LOCAL or len(q.payload) < 2:
                return None
            if q.destination[1] != self.dport or q.destination[0].split("%")[0] != self.address:
                return None
            return int.from_bytes(q.payload[:2], "big")
        if self.method == "udp" and self._udp_answer(got):
            return UDP_ANSWER
        icmp = got.icmp
        if icmp is None:
            return self._tcp_reply(got)
        if icmp.type == ECHO_REPLY[self.family]:
            ours = self.method == "icmp" and icmp.ident == self.ident and got.source == self.address
            return icmp.seq if ours else None
        if icmp.type == ECHO_REQUEST[self.family]:
            return OWN if self.method == "icmp" and icmp.ident == self.ident else None
        if not icmp.is_error:
            return None
        found = quoted_transport(icmp)
        if found is None:
            return None
        quoted, proto, rest = found
        if quoted.dst_ip != self.address or proto != self.proto or len(rest) < 8:
            return None
        if self.method == "icmp":
            kind, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", rest)
            return seq if kind == ECHO_REQUEST[self.family] and ident == self.ident else None
        sport, dport = struct.unpack_from("!HH", rest)
        if (sport, dport) != (self.sport, self.dport):
            return None
        if self.method == "udp":
            checksum: int = struct.unpack_from("!H", rest, 6)[0]
            return checksum
        tcp_seq: int = struct.unpack_from("!I", rest, 4)[0]
        return (tcp_seq - self.seq_base) & 0xFFFFFFFF

    def _tcp_reply(self, got: Received) -> Hashable | None:
        tcp = got.packet.get(TCP) if got.packet is not None else None
        if tcp is None or self.method != "tcp":
            return None
        if tcp.sport == self.sport and tcp.dport == self.dport and tcp.flags & SYN and not tcp.flags & ACK:
            return OWN  # our own SYN, read back on loopback
        if got.source != self.address or (tcp.sport, tcp.dport) != (self.dport, self.sport):
            return None
        if not tcp.flags & (RST | ACK):
            return None
        # A reset acknowledges the SYN's data too (tcptraceroute-style long probes);
        # a SYN-ACK only the SYN (the data waits for the handshake).
        data = self.syn_data if tcp.flags & RST else 0
        return (tcp.ack - 1 - data - self.seq_base) & 0xFFFFFFFF

    def _udp_answer(self, got: Received) -> bool:
        """A datagram from the destination's probed port to ours (a service there
        answered, e.g. DNS on 53): read off a raw UDP socket, or an ordinary one."""
        if got.source.split("%")[0] != self.address or got.queued is not None:
            return False
        if got.packet is None:  # an ordinary UDP socket's payload
            return got.port == self.dport
        udp = got.transport
        return isinstance(udp, UDP) and (udp.sport, udp.dport) == (self.dport, self.sport)

    def reached(self, got: Received) -> bool:
        """Did this reply come from the destination itself?"""
        return got.source.split("%")[0] == self.address

    def is_final(self, got: Received) -> bool:
        """The destination answered, or a router said it cannot be reached: no point
        probing further hops."""
        if self.reached(got):
            return True
        if got.queued is not None and got.queued.origin == rawio.SO_EE_ORIGIN_LOCAL:
            return True  # the kernel would not send it (too long, with -F)
        icmp_type = got.queued.icmp_type if got.queued is not None else (got.icmp.type if got.icmp else None)
        if icmp_type is None:
            return False
        return is_unreachable(self.family, icmp_type) or (self.family == socket.AF_INET6 and icmp_type == 2)


def describe(m: TraceMatcher, got: Received) -> tuple[int | None, int | None, str | None, list[str]]:
    """(ICMP type, code, traceroute mark, notes on the quoted packet) of a reply."""
    if got.queued is not None:
        q = got.queued
        if q.origin == rawio.SO_EE_ORIGIN_LOCAL:  # refused by our kernel: too long
            return None, None, too_big_mark(q.info), []
        kind, code, notes, rest = q.icmp_type, q.icmp_code, [], q.info
    elif got.icmp is not None:
        icmp = got.icmp
        kind, code, notes, rest = icmp.type, icmp.code, _quote_notes(m, icmp), icmp.ident << 16 | icmp.seq
    elif got.connect_errno is None and (got.packet is None or isinstance(got.transport, UDP)):
        return None, None, None, ["udp reply"]
    else:
        tcp = got.packet.get(TCP) if got.packet is not None else None
        flags = tcp.flags if tcp is not None else 0
        refused = got.connect_errno not in (None, 0)  # a connect() the RST refused (tcpconn)
        return None, None, None, ["tcp " + ("RST" if flags & RST or refused else "SYN-ACK")]
    mark = None
    mtu = too_big_mtu(m.family, kind, code, rest)
    if mtu is not None:
        mark = too_big_mark(mtu)
    elif is_unreachable(m.family, kind):
        if not (is_port_unreachable(m.family, kind, code) and m.reached(got)):
            mark = unreachable_mark(m.family, code)
    return kind, code, mark, notes


def _quote_notes(m: TraceMatcher, icmp: ICMP | ICMPv6) -> list[str]:
    """What the quoted packet says changed on the way: TOS, TTL at arrival, MPLS labels."""
    notes: list[str] = []
    if not icmp.is_error:
        return notes
    found = quoted_transport(icmp)
    if found is None:
        return notes
    quoted = found[0]
    if isinstance(quoted, IPv4):
        tos, ttl = quoted.tos, quoted.ttl
    else:
        tos, ttl = quoted.traffic_class, quoted.hop_limit
    if tos != m.tos:
        notes.append(f"TOS 0x{m.tos:02x} arrived as 0x{tos:02x}")
    if is_time_exceeded(m.family, icmp.type) and ttl != 1:
        notes.append(f"quoted TTL {ttl}")
    # Imported with the first hop described, while later hops are still awaited, not at start-up.
    from sockscope.probe.mpls import mpls_labels

    notes.extend(f"MPLS label {label} exp {exp} ttl {ttl}" for label, exp, _bottom, ttl in mpls_labels(icmp))
    return notes
