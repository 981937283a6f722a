"""Capture files with tcpdump's rotation rules (-C, -G, -W): names, sizes, validity."""

from __future__ import annotations

from pathlib import Path

import pytest

from sockscope.capture.sink import FileSink, Rotation
from sockscope.capture.tpacket import Frame
from sockscope.errors import UsageError
from sockscope.pcap import Interface, open_reader

ETH = [Interface(1, 262144, "eth0", "udp")]


def frames(n: int, size: int = 100, start: int = 0) -> list[Frame]:
    return [
        Frame(1_700_000_000 + i, 0, bytes([i % 256]) * size, size, 2, 0, 1) for i in range(start, start + n)
    ]


def read_all(path: Path) -> list[bytes]:
    with open_reader(path) as reader:
        return [r.data for r in reader]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_plain_file(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "a.pcap"), ETH)
    sink.write_frames(frames(5))
    sink.close()
    assert sink.files == [str(tmp_path / "a.pcap")]
    assert read_all(tmp_path / "a.pcap") == [f.data for f in frames(5)]


def test_size_rotation_names_and_limits(tmp_path: Path) -> None:
    base = tmp_path / "r.pcap"
    sink = FileSink(str(base), ETH, rotation=Rotation(size_bytes=1000))
    sink.write_frames(frames(30))  # 116 bytes per record: 9 per 1000-byte file
    sink.close()
    names = [Path(f).name for f in sink.files]
    assert names == ["r.pcap", "r.pcap1", "r.pcap2", "r.pcap3"]
    got = [d for f in sink.files for d in read_all(Path(f))]
    assert got == [f.data for f in frames(30)]
    for f in sink.files[:-1]:
        assert 1000 <= Path(f).stat().st_size < 1000 + 116


def test_size_rotation_ring_overwrites(tmp_path: Path) -> None:
    sink = FileSink(str(tmp_path / "w.pcap"), ETH, rotation=Rotation(size_bytes=1000, max_files=2))
    for i in range(4):
        sink.write_frames(frames(9, start=9 * i))
    sink.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pcap0", "w.pcap1"]
    # The ring wrapped: file 0 holds the fifth file's worth, the newest packets.
    assert read_all(tmp_path / "w.pcap1")[0] == frames(1, start=27)[0].data


def test_time_rotation_with_file_limit(tmp_path: Path) -> None:
    clock = Clock()
    template = str(tmp_path / "t-%s.pcapng")
    sink = FileSink(template, ETH, pcapng=True, rotation=Rotation(seconds=10, max_files=2), clock=clock)
    sink.write_frames(frames(2))
    clock.now += 11
    sink.write_frames(frames(2, start=2))
    clock.now += 11
    sink.write_frames(frames(2, start=4))
    assert sink.finished
    sink.close()
    assert [Path(f).name for f in sink.files] == ["t-1700000000.pcapng", "t-1700000011.pcapng"]
    assert read_all(Path(sink.files[1])) == [f.data for f in frames(2, start=2)]


def test_fast_block_writer_respects_time_rotation(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "tpacket" / "lo.bin"
    block = memoryview(bytearray(data.read_bytes()))
    clock = Clock()
    sink = FileSink(str(tmp_path / "b-%s.pcap"), ETH, rotation=Rotation(seconds=5), clock=clock)
    write = sink.block_writer()
    assert write is not None
    assert write(0, block, 0) == 3
    clock.now += 6
    assert write(0, block, 0) == 3
    sink.close()
    assert [len(read_all(Path(f))) for f in sink.files] == [3, 3]
    assert FileSink(str(tmp_path / "s.pcap"), ETH, rotation=Rotation(size_bytes=10**6)).block_writer() is None


def test_pcapng_files_carry_statistics_at_each_close(tmp_path: Path) -> None:
    from sockscope.pcap import InterfaceStats

    sink = FileSink(str(tmp_path / "s.pcapng"), ETH, pcapng=True, rotation=Rotation(size_bytes=600))
    sink.stats_from(lambda: [InterfaceStats(0, 1, usrdeliv=7, osdrop=1)])
    sink.write_frames(frames(10))
    sink.close()
    for f in sink.files:
        with open_reader(f) as reader:
            list(reader)
            assert reader.statistics[-1].usrdeliv == 7 and reader.interfaces[0].name == "eth0"


@pytest.mark.parametrize(
    "rotation",
    [dict(max_files=2), dict(size_bytes=0), dict(seconds=-1)],
)
def test_bad_rotation(rotation: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        Rotation(**rotation)


def test_mixed_link_types_need_pcapng(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="pcapng"):
        FileSink(str(tmp_path / "m.pcap"), [Interface(1), Interface(113)])
