"""``--rewrite FIELD=VALUE``: simple header and payload changes, checksums recomputed.

Fields: ``sport``, ``dport`` (TCP/UDP), ``saddr``, ``daddr`` (same family as the
packet), ``ttl`` (IPv4 TTL / IPv6 hop limit), ``payload`` (text that replaces the
TCP/UDP data, taken byte for byte from the command line). A packet without the layer
a field needs passes unchanged, and so does the data of a TCP segment that carries
none (SYN, a bare ACK, FIN). TCP data of another length is refused for the packet (an
error, counted; the packet gets the default verdict): see
`DivertPacket.set_transport_payload`.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from sockscope.divert.packet import DivertPacket
from sockscope.errors import UsageError

FIELDS = ("sport", "dport", "saddr", "daddr", "ttl", "payload")


def parse_rewrites(items: list[str]) -> dict[str, object]:
    changes: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in FIELDS:
            raise UsageError(f"bad --rewrite {item!r}: want FIELD=VALUE, FIELD one of {', '.join(FIELDS)}")
        if name in changes:
            raise UsageError(f"--rewrite {name} given twice")
        if name in ("sport", "dport", "ttl"):
            limit = 255 if name == "ttl" else 65535
            if not value.isdigit() or int(value) > limit:
                raise UsageError(f"bad --rewrite {item!r}: want a number 0..{limit}")
            changes[name] = int(value)
        elif name in ("saddr", "daddr"):
            try:
                changes[name] = ipaddress.ip_address(value)
            except ValueError:
                raise UsageError(f"bad --rewrite {item!r}: not an IP address") from None
        else:
            changes[name] = os.fsencode(value)  # the bytes the shell passed, \xff included
    return changes


def rewrite(pkt: DivertPacket, changes: dict[str, object]) -> None:
    """Apply ``changes`` to ``pkt`` (a new payload with fixed checksums) if it has the layers."""
    from sockscope.packets import TCP, UDP

    data = bytearray(pkt.payload)
    v6 = data[0] >> 4 == 6
    changed = False
    for name in ("saddr", "daddr"):
        addr = changes.get(name)
        if isinstance(addr, ipaddress.IPv4Address | ipaddress.IPv6Address) and (addr.version == 6) == v6:
            at = (8 if name == "saddr" else 24) if v6 else (12 if name == "saddr" else 16)
            data[at : at + len(addr.packed)] = addr.packed
            changed = True
    ttl = changes.get("ttl")
    if isinstance(ttl, int):
        data[7 if v6 else 8] = ttl
        changed = True
    transport = pkt.get(TCP) or pkt.get(UDP)
    if transport is not None:
        off: int = transport._off
        for name, at in (("sport", off), ("dport", off + 2)):
            port = changes.get(name)
            if isinstance(port, int):
                struct.pack_into("!H", data, at, port)
                changed = True
        new_data = changes.get("payload")
        if isinstance(new_data, bytes) and not (isinstance(transport, TCP) and not transport.payload):
            data = bytearray(pkt.with_transport_payload(bytes(data), new_data))
            changed = True
    if changed:
        pkt.set_payload(bytes(data))
