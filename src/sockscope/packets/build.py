"""Assemble a whole packet from built headers, innermost first.

    wire = stack(IPv4.build(src="192.0.2.1", dst="192.0.2.2", ttl=2),
                 UDP.build(sport=40000, dport=33434), payload=b"probe")

Each header's next-protocol field (EtherType, IP proto, IPv6 next header) is taken from
the header after it unless given, and each transport gets the nearest IP header before
it for its pseudo-header checksum. Every header's own ``pack`` fills lengths/checksums.
"""

from __future__ import annotations

import itertools

from sockscope.packets.fields import Header
from sockscope.packets.ipv4 import IPv4
from sockscope.packets.ipv6 import IPv6


def stack(*headers: Header, payload: bytes = b"") -> bytes:
    for outer, inner in itertools.pairwise(headers):
        outer._bind(inner)
    wire = payload
    for i in range(len(headers) - 1, -1, -1):
        lower = next((h for h in reversed(headers[:i]) if isinstance(h, IPv4 | IPv6)), None)
        wire = headers[i].pack(wire, lower=lower)
    return wire
