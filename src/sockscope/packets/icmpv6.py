"""ICMPv6 (RFC 4443) and the neighbour-discovery messages' target address (RFC 4861).

    ICMPv6.build(type=ICMP6_ECHO_REQUEST, ident=1, seq=1).pack(b"x", lower=ipv6_header)

The checksum covers the IPv6 pseudo-header, so ``pack`` needs ``lower`` (or use
``sockscope.packets.build.stack``). Errors (types 1-4) expose ``quoted`` like ICMP.
"""

from __future__ import annotations

from sockscope.packets.fields import Header, ip_to_text
from sockscope.packets.icmp import ICMPBase
from sockscope.packets.l4base import PseudoChecksummed

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar

ICMP6_DST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROB = 4
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129
ND_ROUTER_SOLICIT = 133
ND_ROUTER_ADVERT = 134
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136


class ICMPv6(ICMPBase, PseudoChecksummed):
    name = "ICMPv6"
    IP_PROTO: ClassVar[int | None] = 58
    ERRORS = frozenset((ICMP6_DST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROB))

    @property
    def mtu(self) -> int:
        """MTU of a "packet too big" message (the whole second word)."""
        return self.ident << 16 | self.seq

    @property
    def target(self) -> str | None:
        """Target address of a neighbour solicitation/advertisement, when present."""
        if self.type not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT) or self._buf is None:
            return None
        start = self._off + 8
        if start + 16 > self._end:
            return None
        return ip_to_text(self._buf[start : start + 16])

    def pack(self, payload: bytes = b"", lower: Header | None = None) -> bytes:
        if "checksum" not in self.given:
            self.checksum = 0
        return self._fill_checksum(self.pack_header() + payload, lower, 2)
