"""Sans-IO packet decoders and builders shared by capture, probing and divert.

Decode: ``pkt = decode(frame, LINKTYPE_ETHERNET)``; nothing is parsed until asked.
Then ``pkt.layers``, ``pkt[IPv4].ttl``, ``pkt.get(TCP)``, ``pkt.malformed``,
``pkt.truncated``, ``pkt.summary()``; layers link via ``next_layer``/``payload``; ICMP
errors decode what they quote as ``icmp.quoted``.

Build: ``Header.build(**fields)`` then ``.pack(payload, lower=ip)`` per header, or
``stack(*headers, payload=...)`` for a whole packet with lengths, protocol numbers and
checksums filled in (unless given explicitly).
"""

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
