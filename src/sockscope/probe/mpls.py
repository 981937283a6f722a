"""ICMP extensions (RFC 4884) carrying MPLS label stacks (RFC 4950): routers inside
an MPLS tunnel append the labels the expired packet carried. Sans-IO."""

from __future__ import annotations

import struct

from sockscope.packets import ICMP, ICMPv6

MPLS_CLASS, MPLS_INCOMING_STACK = 1, 1
LEGACY_QUOTE = 128  # where extensions start when the length field is zero (RFC 4884 section 5)


def mpls_labels(icmp: ICMP | ICMPv6) -> list[tuple[int, int, bool, int]]:
    """(label, exp, bottom of stack, TTL) per entry of the MPLS extension, if any."""
    packet = icmp.quoted_packet
    if packet is None:
        return []
    body = packet.data  # everything after the 8-byte ICMP header
    # RFC 4884 length: byte 5 of an ICMPv4 header in 32-bit words, byte 4 of ICMPv6 in 64-bit words.
    if isinstance(icmp, ICMPv6):
        words = icmp.ident >> 8
        start = words * 8
    else:
        words = icmp.ident & 0xFF
        start = words * 4
    if words == 0:
        if len(body) <= LEGACY_QUOTE + 4:
            return []
        start = LEGACY_QUOTE
    if len(body) < start + 4 or body[start] >> 4 != 2:
        return []
    out = []
    off = start + 4
    while off + 4 <= len(body):
        length, class_num, c_type = struct.unpack_from("!HBB", body, off)
        if length < 4 or off + length > len(body):
            break
        if class_num == MPLS_CLASS and c_type == MPLS_INCOMING_STACK:
            for entry_off in range(off + 4, off + length - 3, 4):
                (entry,) = struct.unpack_from("!I", body, entry_off)
                out.append((entry >> 12, (entry >> 9) & 7, bool(entry & 0x100), entry & 0xFF))
        off += length
    return out
