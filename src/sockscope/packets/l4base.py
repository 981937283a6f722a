"""What TCP, UDP and ICMPv6 share: a checksum over a pseudo-header of the enclosing IP."""

from __future__ import annotations

from sockscope.packets.checksum import transport_checksum, transport_ok
from sockscope.packets.fields import Header
from sockscope.packets.ipv4 import IPv4
from sockscope.packets.ipv6 import IPv6


def ip_addresses(layer: Header, lower: Header | None = None) -> tuple[bytes, bytes] | None:
    """(src, dst) of ``lower`` or else of the nearest IP layer before ``layer``."""
    node = lower if lower is not None else layer.prev_layer
    while node is not None:
        if isinstance(node, IPv4 | IPv6):
            return node.src, node.dst
        node = node.prev_layer
    return None


class PseudoChecksummed(Header):
    """A transport whose checksum field is ``checksum`` and covers a pseudo-header."""

    checksum: int

    def checksum_ok(self) -> bool | None:
        """None when it cannot be checked: no enclosing IP, or segment cut short."""
        addrs = ip_addresses(self)
        if addrs is None or self._buf is None or self._packet is None or self._packet.truncated:
            return None
        proto = self.IP_PROTO
        assert proto is not None
        return transport_ok(addrs[0], addrs[1], proto, self._buf[self._off : self._end])

    def _fill_checksum(self, segment: bytes, lower: Header | None, offset: int) -> bytes:
        """Patch the checksum into ``segment`` (at ``offset``) unless the caller chose one."""
        if "checksum" in self.given:
            return segment
        addrs = ip_addresses(self, lower)
        if addrs is None:
            raise ValueError(f"{self.name} checksum needs the enclosing IP header: pass lower=")
        proto = self.IP_PROTO
        assert proto is not None
        value = transport_checksum(addrs[0], addrs[1], proto, segment)
        self.checksum = value
        return segment[:offset] + value.to_bytes(2, "big") + segment[offset + 2 :]
