"""Sans-IO packet decoders and builders shared by capture, probing and divert.

Decode: ``pkt = decode(frame, LINKTYPE_ETHERNET)``; nothing is parsed until asked.
Then ``pkt.layers``, ``pkt[IPv4].ttl``, ``pkt.get(TCP)``, ``pkt.malformed``,
``pkt.truncated``, ``pkt.summary()``; layers link via ``next_layer``/``payload``; ICMP
errors decode what they quote as ``icmp.quoted``.

Build: ``Header.build(**fields)`` then ``.pack(payload, lower=ip)`` per header, or
``stack(*headers, payload=...)`` for a whole packet with lengths, protocol numbers and
checksums filled in (unless given explicitly).
"""

from __future__ import annotations

from sockscope import lazy_dir, lazy_exports

# The IP layers and the decoder are loaded with the package (importing ``packet``
# registers them for the next-layer dispatch); the rest on first use (PEP 562):
# probing never needs Ethernet, SLL or ARP, and every module is time off a
# traceroute's start-up (see packet._load_link_layers).
from sockscope.packets import packet as _packet  # noqa: F401  (registers the IP layers)

_EXPORTS = {
    "ARP": "sockscope.packets.arp",
    "ARP_REPLY": "sockscope.packets.arp",
    "ARP_REQUEST": "sockscope.packets.arp",
    "stack": "sockscope.packets.build",
    "internet_checksum": "sockscope.packets.checksum",
    "ones_sum": "sockscope.packets.checksum",
    "pseudo_header": "sockscope.packets.checksum",
    "transport_checksum": "sockscope.packets.checksum",
    "Dot1AD": "sockscope.packets.ether",
    "Dot1Q": "sockscope.packets.ether",
    "Ethernet": "sockscope.packets.ether",
    "Header": "sockscope.packets.fields",
    "ICMP": "sockscope.packets.icmp",
    "ICMPv6": "sockscope.packets.icmpv6",
    "IP_DF": "sockscope.packets.ipv4",
    "IP_MF": "sockscope.packets.ipv4",
    "IPv4": "sockscope.packets.ipv4",
    "AH": "sockscope.packets.ipv6",
    "DestOptions": "sockscope.packets.ipv6",
    "Fragment": "sockscope.packets.ipv6",
    "HopByHop": "sockscope.packets.ipv6",
    "IPv6": "sockscope.packets.ipv6",
    "Routing": "sockscope.packets.ipv6",
    "LINKTYPE_ETHERNET": "sockscope.packets.packet",
    "LINKTYPE_IPV4": "sockscope.packets.packet",
    "LINKTYPE_IPV6": "sockscope.packets.packet",
    "LINKTYPE_LINUX_SLL": "sockscope.packets.packet",
    "LINKTYPE_LINUX_SLL2": "sockscope.packets.packet",
    "LINKTYPE_RAW": "sockscope.packets.packet",
    "Packet": "sockscope.packets.packet",
    "decode": "sockscope.packets.packet",
    "SLL": "sockscope.packets.sll",
    "SLL2": "sockscope.packets.sll",
    "ACK": "sockscope.packets.tcp",
    "CWR": "sockscope.packets.tcp",
    "ECE": "sockscope.packets.tcp",
    "FIN": "sockscope.packets.tcp",
    "PSH": "sockscope.packets.tcp",
    "RST": "sockscope.packets.tcp",
    "SYN": "sockscope.packets.tcp",
    "TCP": "sockscope.packets.tcp",
    "URG": "sockscope.packets.tcp",
    "tcp_options": "sockscope.packets.tcp",
    "UDP": "sockscope.packets.udp",
}


__all__ = [
    "ACK",
    "AH",
    "ARP",
    "ARP_REPLY",
    "ARP_REQUEST",
    "CWR",
    "ECE",
    "FIN",
    "ICMP",
    "IP_DF",
    "IP_MF",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_RAW",
    "PSH",
    "RST",
    "SLL",
    "SLL2",
    "SYN",
    "TCP",
    "UDP",
    "URG",
    "DestOptions",
    "Dot1AD",
    "Dot1Q",
    "Ethernet",
    "Fragment",
    "Header",
    "HopByHop",
    "ICMPv6",
    "IPv4",
    "IPv6",
    "Packet",
    "Routing",
    "decode",
    "internet_checksum",
    "ones_sum",
    "pseudo_header",
    "stack",
    "tcp_options",
    "transport_checksum",
]

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from sockscope.packets.arp import ARP, ARP_REPLY, ARP_REQUEST
    from sockscope.packets.build import stack
    from sockscope.packets.checksum import internet_checksum, ones_sum, pseudo_header, transport_checksum
    from sockscope.packets.ether import Dot1AD, Dot1Q, Ethernet
    from sockscope.packets.fields import Header
    from sockscope.packets.icmp import ICMP
    from sockscope.packets.icmpv6 import ICMPv6
    from sockscope.packets.ipv4 import IP_DF, IP_MF, IPv4
    from sockscope.packets.ipv6 import AH, DestOptions, Fragment, HopByHop, IPv6, Routing
    from sockscope.packets.packet import (
        LINKTYPE_ETHERNET,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_RAW,
        Packet,
        decode,
    )
    from sockscope.packets.sll import SLL, SLL2
    from sockscope.packets.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, TCP, URG, tcp_options
    from sockscope.packets.udp import UDP


__getattr__ = lazy_exports(__name__, _EXPORTS)
__dir__ = lazy_dir(__name__, _EXPORTS)
