"""The internet checksum (RFC 1071) and the pseudo-headers TCP/UDP/ICMPv6 sum over.

Speed trick: the one's-complement sum of 16-bit big-endian words equals the whole buffer
read as one big-endian integer taken modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), and
``int.from_bytes`` plus ``%`` both run in C. The only wrinkle is that one's complement has
two zeros: a non-empty sum that is a multiple of 0xFFFF is 0xFFFF, not 0.
"""

from __future__ import annotations

import struct


def ones_sum(data: bytes, initial: int = 0) -> int:
    """16-bit one's-complement sum of ``data`` (odd length padded with a zero byte)."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    n = int.from_bytes(data, "big") + initial
    if n == 0:
        return 0
    r = n % 0xFFFF
    return r if r else 0xFFFF


def internet_checksum(data: bytes, initial: int = 0) -> int:
    """The value to store in a checksum field: complement of the one's-complement sum."""
    return ~ones_sum(data, initial) & 0xFFFF


def verify(data: bytes, initial: int = 0) -> bool:
    """True when ``data`` (checksum field included) sums to all ones, i.e. is intact."""
    return ones_sum(data, initial) == 0xFFFF


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    """IPv4 (RFC 793/768) or IPv6 (RFC 8200 section 8.1) pseudo-header, by address size."""
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


def transport_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    """Checksum of a TCP/UDP/ICMPv6 ``segment`` whose checksum field holds zero."""
    return internet_checksum(pseudo_header(src, dst, proto, len(segment)) + segment)


def transport_ok(src: bytes, dst: bytes, proto: int, segment: bytes) -> bool:
    return verify(pseudo_header(src, dst, proto, len(segment)) + segment)
