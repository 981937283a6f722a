"""The internet checksum against known values and a plain word-by-word reference."""

from __future__ import annotations

import random

from sockscope.packets.checksum import (
    internet_checksum,
    ones_sum,
    pseudo_header,
    transport_checksum,
    transport_ok,
    verify,
)


def reference_checksum(data: bytes) -> int:
    """RFC 1071 section 4.1, transcribed literally: add words, fold carries, complement."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def test_rfc1071_example() -> None:
    # RFC 1071 section 3: these bytes sum to 0xddf2, so the checksum is its complement.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_known_ipv4_header() -> None:
    # The widely quoted example header whose checksum field holds 0xb1e6.
    header = bytes.fromhex("4500003c1c46400040060000ac100a63ac100a0c")
    assert internet_checksum(header) == 0xB1E6
    assert verify(header[:10] + b"\xb1\xe6" + header[12:])
    assert not verify(header[:10] + b"\xb1\xe7" + header[12:])


def test_odd_length_pads_with_a_zero_byte() -> None:
    assert internet_checksum(b"\x12") == internet_checksum(b"\x12\x00") == 0xEDFF


def test_two_zeros_of_ones_complement() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\0\0") == 0xFFFF
    # A non-zero sum that is a multiple of 0xFFFF is 0xFFFF ("negative zero"): checksum 0.
    assert ones_sum(b"\xff\xff") == 0xFFFF and internet_checksum(b"\xff\xff") == 0
    assert ones_sum(b"\x80\x00\x7f\xff") == 0xFFFF


def test_matches_reference_on_random_data() -> None:
    rng = random.Random(1071)
    for _ in range(500):
        data = rng.randbytes(rng.randrange(0, 200))
        assert internet_checksum(data) == reference_checksum(data), data.hex()


def test_pseudo_headers() -> None:
    v4 = pseudo_header(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 17, 12)
    assert v4 == bytes.fromhex("0a0000010a000002 0011 000c")
    v6 = pseudo_header(bytes(15) + b"\1", bytes(15) + b"\2", 58, 8)
    assert len(v6) == 40 and v6[32:] == bytes.fromhex("00000008 000000 3a")


def test_transport_checksum_verifies() -> None:
    src, dst = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    seg = bytes.fromhex("d4310035000c0000") + b"ping"
    value = transport_checksum(src, dst, 17, seg)
    assert value == 0x4E9C  # worked out by hand (and by reference_checksum)
    assert value == reference_checksum(pseudo_header(src, dst, 17, len(seg)) + seg)
    assert transport_ok(src, dst, 17, seg[:6] + value.to_bytes(2, "big") + seg[8:])
