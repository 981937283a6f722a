"""Ethernet II and 802.1Q / 802.1ad VLAN tags.

    Ethernet.build(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff").pack(payload)

``type`` is filled from the next header when the frame is assembled with
``sockscope.packets.build.stack``; 802.3 length frames (type < 0x600) stop the decode.
"""

from __future__ import annotations

import builtins

from sockscope.packets import registry
from sockscope.packets.arp import ARP
from sockscope.packets.fields import Header

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import ClassVar

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_P_IPV6 = 0x86DD


class _EtherTyped(Header):
    """Shared by Ethernet and VLAN tags: a ``type`` field naming what follows."""

    type: int

    def _next(self) -> builtins.type[Header] | None:  # ``type`` is a field here
        return registry.ETHERTYPES.get(self.type)

    def _bind(self, inner: Header) -> None:
        if "type" not in self.given and inner.ETHERTYPE is not None:
            self.type = inner.ETHERTYPE


class Ethernet(_EtherTyped):
    __hdr__ = (("dst", "6s", b"\xff" * 6), ("src", "6s", b"\0" * 6), ("type", "H", ETH_P_IP))
    name = "Ethernet"
    dst: bytes
    src: bytes


class Dot1Q(_EtherTyped):
    """One VLAN tag (the 4 bytes after the outer TPID); stacked tags are stacked layers."""

    __hdr__ = (("tci", "H", 0), ("type", "H", ETH_P_IP))
    name = "802.1Q"
    ETHERTYPE: ClassVar[int | None] = ETH_P_8021Q
    tci: int

    @property
    def vlan(self) -> int:
        return self.tci & 0x0FFF

    @property
    def priority(self) -> int:
        return self.tci >> 13

    @property
    def dei(self) -> bool:
        return bool(self.tci & 0x1000)


class Dot1AD(Dot1Q):
    """The outer (service) tag of QinQ: same layout, different TPID."""

    name = "802.1ad"
    ETHERTYPE = ETH_P_8021AD


# What an Ethernet (or SLL) frame can carry besides IP, registered with the class
# that dispatches to it (IP layers are registered by ``packet``).
registry.register(Dot1Q, Dot1AD, ARP)
