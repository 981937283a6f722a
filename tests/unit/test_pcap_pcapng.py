"""pcapng: block encoders, the decoder on hand-built files of both byte orders, the writer."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import cast

import pytest

from sockscope.pcap import (
    Decoder,
    Direction,
    Interface,
    InterfaceStats,
    PcapError,
    PcapngWriter,
    PcapWriter,
    Record,
    open_reader,
    pcapng_epb,
    pcapng_idb,
    pcapng_isb,
    pcapng_shb,
)

T0 = 1_700_000_000_123_456_789


# Hand-made blocks in either byte order, independent of the encoders under test.
def block(e: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)


def opt(e: str, code: int, value: bytes) -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def shb(e: str) -> bytes:
    return block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def split(units: int) -> tuple[int, int]:
    return units >> 32, units & 0xFFFFFFFF


def decode_all(blob: bytes) -> tuple[list[Record], Decoder]:
    d = Decoder("t.pcapng")
    records = d.feed(blob)
    d.close()
    return records, d


def sample_file() -> tuple[bytes, list[Record], InterfaceStats]:
    recs = [
        Record(T0, b"\x01" * 5, 5, 0, Direction.INBOUND),
        Record(T0 + 1, b"\x02" * 8, 1500, 1),
        Record(T0 + 2, b"", 0, 0, Direction.OUTBOUND),
    ]
    stats = InterfaceStats(0, T0 + 10, T0 - 5, T0 + 9, ifrecv=10, ifdrop=1, osdrop=3, usrdeliv=6)
    f = io.BytesIO()
    w = PcapngWriter(f, [Interface(1, 1514, "eth0", "udp port 53"), Interface(113, 65535, "any")])
    for r in recs:
        w.write(r)
    w.close([stats])
    return f.getvalue(), recs, stats


def test_round_trip_interfaces_records_statistics() -> None:
    blob, recs, stats = sample_file()
    reader = open_reader(io.BytesIO(blob))
    assert list(reader) == recs
    assert reader.format == "pcapng"
    # Different snaplens are written as 0 (no limit): libpcap rejects a file whose snaplens differ.
    assert reader.interfaces == [Interface(1, 0, "eth0", "udp port 53", 9), Interface(113, 0, "any", None, 9)]
    assert reader.statistics == [stats]


def test_blocks_are_padded_and_lengths_agree() -> None:
    for data in (b"", b"a", b"ab", b"abc", b"abcd", b"abcde"):
        for direction in (None, Direction.INBOUND):
            epb = pcapng_epb(0, T0, data, None, direction)
            assert len(epb) % 4 == 0
            assert struct.unpack_from("<I", epb, 4) == struct.unpack_from("<I", epb, len(epb) - 4)
    assert pcapng_idb(1, 100, tsresol=6) == block("<", 1, struct.pack("<HHI", 1, 0, 100))  # no options
    assert pcapng_shb(None) == shb("<")
    assert pcapng_isb(InterfaceStats(0, 5)) == block("<", 5, struct.pack("<III", 0, 0, 5))  # no counters


def test_writer_inline_epb_matches_the_encoder() -> None:
    f = io.BytesIO()
    w = PcapngWriter(f, [Interface(1)])
    start = len(f.getvalue())
    w.write(Record(T0, b"xyz", 70))
    w.close()
    assert f.getvalue()[start:] == pcapng_epb(0, T0, b"xyz", 70)


def big_endian_file() -> bytes:
    e = ">"
    blob = shb(e)
    # Interface 0: microseconds (the default, no if_tsresol), a name with a NUL, a filter.
    blob += block(
        e, 1, struct.pack(e + "HHI", 1, 0, 4) + opt(e, 2, b"eth9\0") + opt(e, 11, b"\0tcp") + bytes(4)
    )
    # Interface 1: 2**-10 s units and a 100 s if_tsoffset.
    opts1 = opt(e, 9, b"\x8a") + opt(e, 14, struct.pack(e + "q", 100)) + bytes(4)
    blob += block(e, 1, struct.pack(e + "HHI", 228, 0, 0) + opts1)
    blob += block(e, 0x0BAD, b"unknown block, skipped")
    hi, lo = split(1_600_000_000_000_001)  # microseconds
    flags = opt(e, 2, struct.pack(e + "I", 2)) + opt(e, 1, b"a comment") + bytes(4)
    blob += block(e, 6, struct.pack(e + "IIIII", 0, hi, lo, 3, 3) + b"abc\0" + flags)
    hi, lo = split(3 * 1024 + 512)  # 3.5 s in 1/1024 s units
    blob += block(e, 6, struct.pack(e + "IIIII", 1, hi, lo, 2, 2) + b"de")
    blob += block(e, 3, struct.pack(e + "I", 9) + b"fghijklmn")  # SPB cut to interface 0's snaplen 4
    blob += block(e, 2, struct.pack(e + "HHIIII", 0, 0, 0, 5, 1, 1) + b"o")  # obsolete packet block
    isb_opts = opt(e, 2, struct.pack(e + "II", 0, 1)) + opt(e, 4, struct.pack(e + "Q", 77))
    isb_opts += opt(e, 7, struct.pack(e + "Q", 5)) + opt(e, 5, b"bad") + bytes(4)
    blob += block(e, 5, struct.pack(e + "III", 0, 0, 2) + isb_opts)
    return blob


def test_big_endian_file_built_by_hand() -> None:
    records, d = decode_all(big_endian_file())
    got = [(r.timestamp_ns, r.data, r.orig_len, r.interface_id, r.direction) for r in records]
    assert got == [
        (1_600_000_000_000_001_000, b"abc", 3, 0, Direction.OUTBOUND),
        (103_500_000_000, b"de", 2, 1, None),
        (0, b"fghi", 9, 0, None),
        (5_000, b"o", 1, 0, None),
    ]
    assert d.interfaces == [Interface(1, 4, "eth9", "tcp", 6), Interface(228, 0, None, None, 0x8A)]
    # A counter of the wrong size (option 5 here) is dropped, the others kept.
    assert d.statistics == [InterfaceStats(0, 2_000, starttime_ns=1_000, ifrecv=77, osdrop=5)]


def test_sections_of_both_byte_orders_number_interfaces_across_the_file() -> None:
    first, _, _ = sample_file()
    second = shb(">") + block(">", 1, struct.pack(">HHI", 1, 0, 0) + opt(">", 9, b"\x09") + bytes(4))
    second += block(">", 6, struct.pack(">IIIII", 0, 0, 42, 1, 1) + b"z")
    records, d = decode_all(first + second)
    assert [i.name for i in d.interfaces] == ["eth0", "any", None]
    assert (records[-1].interface_id, records[-1].timestamp_ns) == (2, 42)


def test_truncation_at_every_offset() -> None:
    blob, recs, _ = sample_file()
    # Block boundaries, from each block's total length.
    ends, pos = [], 0
    while pos < len(blob):
        pos += struct.unpack_from("<I", blob, pos + 4)[0]
        ends.append(pos)
    for cut in range(len(blob)):
        d = Decoder("t.pcapng")
        got = d.feed(blob[:cut])
        # Blocks 3, 4, 5 are the packets (after SHB and two IDBs).
        assert got == recs[: sum(1 for end in ends[3:6] if end <= cut)], cut
        if cut in ends:
            d.close()
            continue
        start = max(end for end in [0, *ends] if end <= cut)
        with pytest.raises(
            PcapError, match=rf"^t.pcapng: truncated .* at offset {start}: {cut - start} of \d+ bytes$"
        ):
            d.close()


def test_truncated_packet_names_the_packet() -> None:
    blob, _, _ = sample_file()
    d = Decoder("t.pcapng")
    assert len(d.feed(blob[: 196 + 12])) == 1  # 12 bytes into the second packet's block
    with pytest.raises(
        PcapError, match=r"truncated enhanced packet block \(packet 2\) at offset 196: 12 of 40 bytes"
    ):
        d.close()


def corrupt(blob: bytes, offset: int, fmt: str, value: int) -> bytearray:
    damaged = bytearray(blob)
    struct.pack_into(fmt, damaged, offset, value)
    return damaged


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        # Second EPB (offset 196 in the sample) with a length that is not a multiple of 4,
        (
            lambda b: corrupt(b, 200, "<I", 41),
            r"corrupt enhanced packet block \(packet 2\) at offset 196: block length 41",
        ),
        # with a trailer that disagrees,
        (
            lambda b: corrupt(b, 196 + 36, "<I", 44),
            r"at offset 196: length 40 at the start but 44 at the end",
        ),
        # for an interface the section does not describe,
        (lambda b: corrupt(b, 204, "<I", 7), r"at offset 196: interface 7 but the section describes 2"),
        # with a captured length past the block.
        (lambda b: corrupt(b, 216, "<I", 9), r"at offset 196: captured length 9 overruns the block"),
    ],
)
def test_corrupt_blocks(damage: Callable[[bytes], bytearray], message: str) -> None:
    blob, recs, _ = sample_file()
    assert struct.unpack_from("<I", blob, 196) == (6,)
    d = Decoder("t.pcapng")
    assert d.feed(damage(blob)) == recs[:1]
    with pytest.raises(PcapError, match=message):
        d.close()


def test_option_overrunning_its_block() -> None:
    e = "<"
    blob = shb(e) + block(e, 1, struct.pack(e + "HHI", 1, 0, 0) + struct.pack(e + "HH", 2, 200) + b"eth0")
    d = Decoder("t.pcapng")
    d.feed(blob)
    with pytest.raises(
        PcapError, match=r"corrupt interface description block at offset 28: option 2 at offset 44"
    ):
        d.close()


def test_bad_byte_order_magic() -> None:
    blob = bytearray(shb("<"))
    blob[8:12] = b"\0\0\0\0"
    d = Decoder("t.pcapng")
    d.feed(blob)
    with pytest.raises(
        PcapError, match="corrupt section header block at offset 0: byte-order magic 00000000"
    ):
        d.close()


def test_writer_keeps_one_snaplen_for_libpcap() -> None:
    w = PcapngWriter(io.BytesIO(), [Interface(1, 1500), Interface(1, 1500)])
    w.add_interface(Interface(1, 100))
    w.add_interface(Interface(1, 9000))  # larger: declared as is, or its packets would be cut
    assert [i.snaplen for i in w.interfaces] == [1500, 1500, 1500, 9000]


def test_writer_rejects_unknown_interface() -> None:
    w = PcapngWriter(io.BytesIO(), [Interface(1)])
    with pytest.raises(PcapError, match="record for interface 1, but 1 are described"):
        w.write(Record(T0, b"", 0, 1))
    assert w.add_interface(Interface(1, name="late")) == 1
    w.write(Record(T0, b"", 0, 1))


@pytest.mark.parametrize("make", [lambda f: PcapngWriter(f, [Interface(1)]), lambda f: PcapWriter(f, 1)])
def test_write_failing_halfway_leaves_no_half_record(
    make: Callable[[io.BytesIO], PcapngWriter | PcapWriter],
) -> None:
    # Data that bytearray += rejects fails write() after the header went into the buffer,
    # as a KeyboardInterrupt at that point would.
    f = io.BytesIO()
    w = make(f)
    w.write(Record(T0, b"ok", 2))
    with pytest.raises(TypeError):
        w.write(Record(T0, cast(bytes, _Sized()), 3))
    w.close()
    d = Decoder("t")
    assert [r.data for r in d.feed(f.getvalue())] == [b"ok"]
    d.close()


class _Sized:
    def __len__(self) -> int:
        return 3
