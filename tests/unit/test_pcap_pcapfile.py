"""Classic pcap: encoders, the incremental decoder, the reader and the writer."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from sockscope.errors import SockscopeError, UsageError
from sockscope.pcap import (
    Decoder,
    Interface,
    PcapError,
    PcapngWriter,
    PcapWriter,
    Record,
    open_reader,
    pcap_header,
    pcap_record,
    writer_for,
)
from sockscope.pcap import files as pcap_files

T0 = 1_700_000_000_123_456_789


def records(n: int = 3) -> list[Record]:
    # Lengths 1, 2, 3... so every record has a different size and end offset.
    return [Record(T0 + i * 1_000_000_007, bytes([i]) * (i + 1), i + 1 + 10 * i) for i in range(n)]


def written(recs: list[Record], nanosecond: bool = True) -> bytes:
    f = io.BytesIO()
    w = PcapWriter(f, 1, 65535, nanosecond)
    for r in recs:
        w.write(r)
    w.close()
    return f.getvalue()


def decode(blob: bytes) -> tuple[list[Record], Decoder]:
    d = Decoder("test.pcap")
    out = d.feed(blob)
    return out, d


def test_writer_output_is_the_encoders_output() -> None:
    recs = records()
    expected = pcap_header(1, 65535, True) + b"".join(
        pcap_record(r.timestamp_ns, r.data, r.orig_len) for r in recs
    )
    assert written(recs) == expected
    assert expected[:4] == bytes.fromhex("4d3cb2a1")  # little-endian nanosecond magic


@pytest.mark.parametrize("nanosecond", [True, False])
def test_round_trip(nanosecond: bool) -> None:
    recs = records(5)
    reader = open_reader(io.BytesIO(written(recs, nanosecond)))
    got = list(reader)
    assert [r.data for r in got] == [r.data for r in recs]
    assert [r.orig_len for r in got] == [r.orig_len for r in recs]
    # Microsecond files keep whole microseconds: the nanoseconds are cut, not rounded.
    expect_ts = [r.timestamp_ns if nanosecond else r.timestamp_ns // 1000 * 1000 for r in recs]
    assert [r.timestamp_ns for r in got] == expect_ts
    assert reader.format == "pcap"
    assert reader.interfaces == [Interface(1, 65535, tsresol=9 if nanosecond else 6)]
    assert reader.statistics == []


@pytest.mark.parametrize(("magic", "scale"), [(0xA1B2C3D4, 1000), (0xA1B23C4D, 1)])
def test_big_endian_files_built_by_hand(magic: int, scale: int) -> None:
    blob = struct.pack(">IHHiIII", magic, 2, 4, 0, 0, 96, 0x10000001)  # upper bits: FCS info
    blob += struct.pack(">IIII", 1_600_000_000, 250_000, 3, 60) + b"abc"
    blob += struct.pack(">IIII", 1_600_000_001, 7, 0, 0)
    got, d = decode(blob)
    d.close()
    assert [(r.timestamp_ns, r.data, r.orig_len) for r in got] == [
        (1_600_000_000 * 10**9 + 250_000 * scale, b"abc", 60),
        (1_600_000_001 * 10**9 + 7 * scale, b"", 0),
    ]
    assert d.interfaces[0].linktype == 1 and d.interfaces[0].snaplen == 96


def test_truncation_at_every_offset() -> None:
    recs = records(3)
    blob = written(recs)
    ends = [24]
    for r in recs:
        ends.append(ends[-1] + 16 + len(r.data))
    assert ends[-1] == len(blob)
    for cut in range(len(blob)):
        got, d = decode(blob[:cut])
        complete = sum(1 for end in ends[1:] if end <= cut)
        assert [r.data for r in got] == [r.data for r in recs[:complete]], cut
        if cut in ends:
            d.close()  # a cut between records (or after the header alone) leaves a valid file
            continue
        with pytest.raises(PcapError) as e:
            d.close()
        start = max(end for end in [0, *ends] if end <= cut)
        msg = str(e.value)
        assert msg.startswith("test.pcap: truncated ") and f"at offset {start}" in msg, (cut, msg)
        assert "\n" not in msg
        if cut >= 24:
            assert f"(packet {complete + 1}): {cut - start} of " in msg
    _, d = decode(blob)
    d.close()  # the whole file: no error


def test_message_names_the_missing_bytes() -> None:
    blob = written(records(2))
    _, d = decode(blob[:-1])
    with pytest.raises(
        PcapError, match=r"^test.pcap: truncated record at offset 41 \(packet 2\): 17 of 18 bytes$"
    ):
        d.close()


def test_feeding_byte_by_byte_gives_the_same_records() -> None:
    blob = written(records(4))
    d = Decoder()
    got = [r for i in range(len(blob)) for r in d.feed(blob[i : i + 1])]
    d.close()
    assert got == list(open_reader(io.BytesIO(blob)))


def test_corrupt_length_reports_after_the_good_records() -> None:
    blob = bytearray(written(records(3)))
    struct.pack_into("<I", blob, 24 + 17 + 8, 0xFFFFFFF0)  # caplen of the second record
    d = Decoder("x.pcap")
    assert [r.data for r in d.feed(blob)] == [b"\x00"]
    with pytest.raises(
        PcapError, match=r"corrupt record at offset 41 \(packet 2\): captured length 4294967280"
    ):
        d.close()
    with pytest.raises(PcapError):
        d.feed(b"more")  # the error sticks


def test_reader_yields_good_records_then_raises(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    path.write_bytes(written(records(3))[:-2])
    seen = []
    with pytest.raises(SockscopeError, match=r"cut.pcap: truncated record at offset 59 \(packet 3\)"):
        for r in open_reader(path):
            seen.append(r)
    assert len(seen) == 2


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "truncated file header at offset 0: 0 of 24 bytes"),
        (b"\xd4\xc3", "truncated file header at offset 0: 2 of 24 bytes"),
        (b"GIF89a" + bytes(30), "not a pcap or pcapng file"),
    ],
)
def test_not_a_capture(blob: bytes, message: str) -> None:
    d = Decoder("f")
    assert d.feed(blob) == []
    with pytest.raises(PcapError, match=message):
        d.close()


def test_missing_file_is_a_pcap_error(tmp_path: Path) -> None:
    with pytest.raises(PcapError, match=r"nope\.pcap: No such file"):
        open_reader(tmp_path / "nope.pcap")


def test_writer_flushes_in_chunks_and_on_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcap_files, "FLUSH_AT", 1000)
    path = tmp_path / "x.pcap"
    w = PcapWriter(path, 1)
    assert path.stat().st_size == 24  # header written at once: an empty capture is a valid file
    for i in range(100):
        w.write(Record(T0 + i, bytes(40), 40))
    assert 1000 <= path.stat().st_size < 24 + 100 * 56
    w.close()
    assert path.stat().st_size == 24 + 100 * 56
    assert len(list(open_reader(path))) == 100
    with pytest.raises(PcapError, match="write after close"):
        w.write(Record(T0, b"", 0))
    w.close()  # closing twice is harmless


def test_unencodable_timestamp_is_a_pcap_error() -> None:
    w = PcapWriter(io.BytesIO(), 1)
    with pytest.raises(PcapError, match="cannot write record"):
        w.write(Record(-1, b"", 0))
    with pytest.raises(PcapError, match="does not fit"):
        pcap_record(2**32 * 10**9, b"")


def test_writer_for_picks_the_format_by_name(tmp_path: Path) -> None:
    eth = [Interface(1, 1500, "eth0"), Interface(1, 9000, "eth1")]
    w = writer_for(tmp_path / "a.pcapng", eth)
    assert isinstance(w, PcapngWriter)
    w.close()
    w2 = writer_for(tmp_path / "a.pcap", eth, nanosecond=False)
    assert isinstance(w2, PcapWriter)
    w2.close()
    reader = open_reader(tmp_path / "a.pcap")
    assert list(reader) == []
    assert reader.interfaces == [Interface(1, 9000, tsresol=6)]
    with pytest.raises(UsageError, match=r"need a \.pcapng file"):
        writer_for(tmp_path / "b.pcap", [Interface(1), Interface(113)])
