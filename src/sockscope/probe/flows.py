"""Paris-traceroute probe crafting: every probe of a trace has the same flow
identifier (addresses, protocol, ports, and for ICMP the checksum, which load
balancers hash over too), while a field that flow hashing ignores tells probes
apart and comes back quoted in ICMP errors:

* UDP: the checksum is the probe number, made so by two payload bytes;
* ICMP echo: the sequence number, with two payload bytes keeping the checksum fixed;
* TCP SYN: the sequence number.

Pure functions over bytes (sans-IO): the header values go in, the wire comes out.
"""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import struct

from sockscope.packets import ICMP, SYN, TCP, UDP, ICMPv6, IPv4, IPv6, stack
from sockscope.packets.tcp import tcp_options

UDP_HEADER, ICMP_HEADER, TCP_HEADER = 8, 8, 20
# A SYN probe carries the options a Linux SYN does (MSS, SACK-permitted, timestamps,
# window scale), as traceroute -T sends: 60-byte probes over IPv4, 80 over IPv6.
SYN_OPTIONS = 20
ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}


def _ones_add(a: int, b: int) -> int:
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def _word_for(natural: int, wanted: int) -> int:
    """The 16-bit word that, added at an even offset of the summed data (where a zero
    word was), turns a checksum of ``natural`` into ``wanted``."""
    return _ones_add(natural, ~wanted & 0xFFFF) & 0xFFFF


def ip_header(family: int, src: str, dst: str, ttl: int, ident: int, tos: int, flow: int) -> IPv4 | IPv6:
    if family == socket.AF_INET:
        return IPv4.build(src=src, dst=dst, ttl=ttl, ident=ident & 0xFFFF, tos=tos)
    return IPv6.build(src=src, dst=dst, hop_limit=ttl, ver_tc_flow=(6 << 28) | (tos << 20) | (flow & 0xFFFFF))


def udp_probe(ip: IPv4 | IPv6, sport: int, dport: int, key: int, size: int) -> bytes:
    """A UDP datagram whose checksum equals ``key`` (1..0xFFFE), ``size`` payload bytes (>= 2)."""
    filler = b"\0\0" + b"@" * (size - 2)
    natural = UDP.build(sport=sport, dport=dport)
    natural.pack(filler, lower=ip)
    word = _word_for(natural.checksum, key)
    payload = struct.pack("!H", word) + filler[2:]
    return stack(ip, UDP.build(sport=sport, dport=dport, checksum=key), payload=payload)


def icmp_probe(ip: IPv4 | IPv6, ident: int, seq: int, checksum: int, size: int) -> bytes:
    """An echo request with sequence ``seq`` whose checksum is always ``checksum``."""
    family = socket.AF_INET if isinstance(ip, IPv4) else socket.AF_INET6
    cls = ICMP if family == socket.AF_INET else ICMPv6
    filler = b"\0\0" + b"@" * (size - 2)
    natural = cls.build(type=ECHO_REQUEST[family], ident=ident, seq=seq)
    natural.pack(filler, lower=ip)
    word = _word_for(natural.checksum, checksum)
    payload = struct.pack("!H", word) + filler[2:]
    return stack(
        ip, cls.build(type=ECHO_REQUEST[family], ident=ident, seq=seq, checksum=checksum), payload=payload
    )


def tcp_syn(ip: IPv4 | IPv6, sport: int, dport: int, seq: int, size: int = 0) -> bytes:
    """A SYN with Linux's options and ``size`` bytes of data after them (to make a
    probe as long as asked, as tcptraceroute does)."""
    mss = 1460 if isinstance(ip, IPv4) else 1440
    opts = tcp_options(mss=mss, sack_ok=True, ts=(seq & 0xFFFFFFFF, 0), wscale=7)
    tcp = TCP.build(sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, flags=SYN, window=64240, options=opts)
    return stack(ip, tcp, payload=bytes(size))


class SynTemplate:
    """SYN segments that differ only in destination port and sequence number: built
    once with the packet builders, then patched per probe, the TCP checksum updated
    arithmetically (RFC 1624) instead of summed again. A port scan sends 65,535."""

    def __init__(self, ip: IPv4 | IPv6, sport: int) -> None:
        wire = stack(ip, TCP.build(sport=sport, dport=0, seq=0, flags=SYN, window=64240))
        self._wire = wire
        self._tcp = len(wire) - TCP_HEADER
        (checksum,) = struct.unpack_from("!H", wire, self._tcp + 16)
        self._sum = ~checksum & 0xFFFF  # one's-complement sum with port and sequence zero

    def packet(self, dport: int, seq: int) -> bytes:
        s = self._sum + dport + (seq >> 16) + (seq & 0xFFFF)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        buf = bytearray(self._wire)
        struct.pack_into("!HI", buf, self._tcp + 2, dport, seq)
        struct.pack_into("!H", buf, self._tcp + 16, ~s & 0xFFFF)
        return bytes(buf)
