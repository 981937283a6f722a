"""Send packets you built yourself: whole IPv4/IPv6 packets from
``sockscope.packets`` (chosen TTL, TOS, ID, flags, options; checksums filled in)
go out through a raw socket with IP_HDRINCL / IPV6_HDRINCL, so the kernel adds
nothing. Read what comes back with `sockscope.packets.decode`.

    from sockscope.packets import IPv4, UDP, stack
    wire = stack(IPv4.build(src="192.0.2.1", dst="192.0.2.2", ttl=3, tos=0x10, ident=7),
                 UDP.build(sport=40000, dport=33434), payload=b"probe")
    sockscope.probe.send_packets([wire])
"""

from __future__ import annotations

import _socket as socket  # as in rawio: the C core, no enums

from sockscope.errors import UsageError
from sockscope.packets import LINKTYPE_RAW, IPv4, IPv6, decode
from sockscope.probe import rawio
from sockscope.probe.common import sockaddr

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Iterable


def send_packets(packets: Iterable[bytes]) -> int:
    """Send each whole IP packet to the destination in its own header; returns how
    many were sent. A packet that is not IPv4/IPv6 is a usage error (nothing of the
    batch is sent then)."""
    batch: list[tuple[int, bytes, tuple[object, ...]]] = []
    for wire in packets:
        pkt = decode(wire, LINKTYPE_RAW)
        # Only the IP header must be sound: a deliberately odd transport is the user's business.
        ip = pkt.layers[0] if pkt.layers else None
        if isinstance(ip, IPv4) and ip.version == 4 and ip.header_len >= 20:
            batch.append((socket.AF_INET, wire, (ip.dst_ip, 0)))
        elif isinstance(ip, IPv6) and ip.version == 6:
            batch.append((socket.AF_INET6, wire, sockaddr(socket.AF_INET6, ip.dst_ip)))
        else:
            raise UsageError(f"not an IP packet ({pkt.malformed or 'no IP header'})")
    senders: dict[int, socket.socket] = {}
    try:
        for family, wire, address in batch:
            if family not in senders:
                senders[family] = rawio.raw_sender(family)
            senders[family].sendto(wire, address)
    finally:
        for sock in senders.values():
            sock.close()
    return len(batch)
