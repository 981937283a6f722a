"""ICMP for IPv4 (RFC 792), including the packet an error message quotes.

    ICMP.build(type=ICMP_ECHO, ident=1, seq=1).pack(b"x" * 56)

The second 32-bit word is split into ``ident``/``seq`` whatever the type (for
"fragmentation needed" ``seq`` is the next-hop MTU). ``checksum`` is filled unless given.
Errors (unreachable, time exceeded, parameter problem, source quench, redirect) expose
``quoted``: the offending IP header plus the 8+ bytes that follow, decoded as a packet
of its own whose shortfall counts as truncation, not malformation.
"""

from __future__ import annotations

from sockscope.packets.checksum import internet_checksum, verify
from sockscope.packets.fields import Header

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar

    from sockscope.packets.packet import Packet

ICMP_ECHOREPLY = 0
ICMP_UNREACH = 3
ICMP_SOURCEQUENCH = 4
ICMP_REDIRECT = 5
ICMP_ECHO = 8
ICMP_TIMXCEED = 11
ICMP_PARAMPROB = 12
ERROR_TYPES = frozenset((ICMP_UNREACH, ICMP_SOURCEQUENCH, ICMP_REDIRECT, ICMP_TIMXCEED, ICMP_PARAMPROB))


class ICMPBase(Header):
    """Layout and quoting shared with ICMPv6 (which differs in types and checksum)."""

    __hdr__ = (("type", "B", 0), ("code", "B", 0), ("checksum", "H", 0), ("ident", "H", 0), ("seq", "H", 0))
    ERRORS: ClassVar[frozenset[int]] = frozenset()
    type: int
    code: int
    checksum: int
    ident: int
    seq: int

    @property
    def is_error(self) -> bool:
        return self.type in self.ERRORS

    @property
    def quoted_packet(self) -> Packet | None:
        """The quoted datagram of an error message, decoded lazily (None otherwise)."""
        if not self.is_error or self._buf is None:
            return None
        cached: Packet | None = self.__dict__.get("_quoted")
        if cached is None:
            from sockscope.packets.packet import LINKTYPE_RAW, Packet

            cached = Packet(self._buf[self._off + 8 : self._end], LINKTYPE_RAW, quoted=True)
            self.__dict__["_quoted"] = cached
        return cached

    @property
    def quoted(self) -> Header | None:
        """The quoted IP layer (its ``next_layer`` is the quoted transport), or None."""
        pkt = self.quoted_packet
        if pkt is None or not pkt.layers:
            return None
        return pkt.layers[0]


class ICMP(ICMPBase):
    name = "ICMP"
    IP_PROTO: ClassVar[int | None] = 1
    ERRORS = ERROR_TYPES

    @property
    def mtu(self) -> int:
        """Next-hop MTU of a "fragmentation needed" error (RFC 1191)."""
        return self.seq

    def checksum_ok(self) -> bool | None:
        if self._buf is None or self._packet is None or self._packet.truncated:
            return None
        return verify(self._buf[self._off : self._end])

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if "checksum" not in self.given:
            self.checksum = 0
            self.checksum = internet_checksum(self.pack_header() + payload)
        return self.pack_header() + payload
