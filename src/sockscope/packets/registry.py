"""Next-layer dispatch tables, filled in by ``sockscope.packets.packet`` at import.

Kept apart from the layer modules so that, e.g., ``ether`` can hand over to IPv4 without
importing it (which would make the layer modules import each other in a circle).
"""

from __future__ import annotations

from sockscope.packets.fields import Header

# EtherType (also the SLL protocol field) -> layer class.
ETHERTYPES: dict[int, type[Header]] = {}
# IP protocol / IPv6 next-header number -> layer class (transports and IPv6 extensions).
IP_PROTOS: dict[int, type[Header]] = {}
# IPv6 extension header numbers, which IPv4 must not follow into.
IPV6_EXTENSIONS: set[int] = set()


def register(*classes: type[Header]) -> None:
    for cls in classes:
        if cls.ETHERTYPE is not None:
            ETHERTYPES[cls.ETHERTYPE] = cls
        if cls.IP_PROTO is not None:
            IP_PROTOS[cls.IP_PROTO] = cls
