"""Linux "cooked" capture headers, what ``-i any`` captures carry instead of Ethernet.

SLL (LINKTYPE_LINUX_SLL, 113) is 16 bytes; SLL2 (LINKTYPE_LINUX_SLL2, 276) is 20 and adds
the interface index. Both end in (or carry) an EtherType ``protocol`` for the next layer.
"""

from __future__ import annotations

from sockscope.packets import ether as _ether  # noqa: F401  (registers ARP and VLAN tags, which SLL frames carry too)
from sockscope.packets import registry
from sockscope.packets.fields import Header

# sll_pkttype values (linux/if_packet.h).
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4
PACKET_TYPE_NAMES = {0: "In", 1: "B", 2: "M", 3: "P", 4: "Out"}


class _Cooked(Header):
    protocol: int
    addr_len: int
    addr: bytes

    @property
    def link_address(self) -> bytes:
        """The sender's link-layer address, cut to its stated length (at most 8)."""
        return self.addr[: min(self.addr_len, 8)]

    def _next(self) -> type[Header] | None:
        return registry.ETHERTYPES.get(self.protocol)

    def _bind(self, inner: Header) -> None:
        if "protocol" not in self.given and inner.ETHERTYPE is not None:
            self.protocol = inner.ETHERTYPE


class SLL(_Cooked):
    __hdr__ = (
        ("packet_type", "H", PACKET_HOST),
        ("arphrd_type", "H", 1),
        ("addr_len", "H", 6),
        ("addr", "8s", b"\0" * 8),
        ("protocol", "H", 0x0800),
    )
    name = "SLL"
    packet_type: int
    arphrd_type: int


class SLL2(_Cooked):
    __hdr__ = (
        ("protocol", "H", 0x0800),
        ("reserved", "H", 0),
        ("if_index", "I", 0),
        ("arphrd_type", "H", 1),
        ("packet_type", "B", PACKET_HOST),
        ("addr_len", "B", 6),
        ("addr", "8s", b"\0" * 8),
    )
    name = "SLL2"
    reserved: int
    if_index: int
    arphrd_type: int
    packet_type: int
