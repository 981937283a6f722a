"""The TPACKET_V3 ring codec and the ring-to-file fast path, over recorded blocks
(tests/unit/data/tpacket, see record.py there) and blocks built here."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sockscope.capture import fastpath, tpacket
from sockscope.capture.packet_socket import RingConfig
from sockscope.packets import UDP, Dot1Q, Ethernet, IPv4, decode, stack
from sockscope.packets.sll import PACKET_HOST
from sockscope.pcap import Decoder, Interface, PcapngWriter, PcapWriter

DATA = Path(__file__).parent / "data" / "tpacket"
PORT = 5999


def _block(name: str) -> bytearray:
    return bytearray((DATA / name).read_bytes())


def test_recorded_ethernet_block() -> None:
    block = _block("lo.bin")
    head = tpacket.block_header(block, 0)
    assert head.status & tpacket.TP_STATUS_USER and head.num_packets == 3
    frames = tpacket.block_frames(block, 0, cooked=False)
    assert [decode(f.data, 1)[UDP].payload for f in frames] == [
        b"sockscope-0",
        b"sockscope-1",
        b"sockscope-2",
    ]
    for f in frames:
        assert f.wirelen == len(f.data) == 14 + 20 + 8 + 11
        assert f.pkttype == PACKET_HOST and f.direction == 1  # the outgoing copy was filtered out
        assert decode(f.data, 1)[UDP].dport == PORT and f.sec > 1_700_000_000 and 0 <= f.nsec < 10**9
    assert [f.sec * 10**9 + f.nsec for f in frames] == sorted(f.sec * 10**9 + f.nsec for f in frames)


def test_recorded_cooked_block_gets_an_sll_header() -> None:
    frames = tpacket.block_frames(_block("any.bin"), 0, cooked=True)
    assert len(frames) == 3
    for n, f in enumerate(frames):
        pkt = decode(f.data, 113)
        assert [layer.name for layer in pkt.layers] == ["SLL", "IPv4", "UDP"]
        assert pkt.layers[0].arphrd_type == 772 and pkt.layers[0].protocol == 0x0800
        assert pkt[UDP].payload == b"sockscope-%d" % n
        assert f.wirelen == len(f.data) == 16 + 20 + 8 + 11


def test_release_hands_the_block_back() -> None:
    block = _block("lo.bin")
    assert tpacket.block_ready(block, 0)
    tpacket.release_block(block, 0)
    assert not tpacket.block_ready(block, 0)


def _synthetic_block(packets: list[tuple[bytes, int, int]]) -> bytearray:
    """A block as the kernel lays it out: (frame, status, vlan tci) per packet."""
    first = 48
    body = bytearray()
    offsets = []
    for frame, status, tci in packets:
        offsets.append(len(body))
        hdr_len = 48 + 20  # tpacket3_hdr + sockaddr_ll
        mac = (hdr_len + 15) & ~15
        size = (mac + len(frame) + 15) & ~15
        entry = bytearray(size)
        entry[48:68] = struct.pack("=HHiHBB8s", 17, 0x0008, 7, 1, 0, 6, b"\2" * 6)
        entry[mac : mac + len(frame)] = frame
        body += entry
        struct.pack_into("=IIIIIIHHIIHH", body, offsets[-1], 0, 1_700_000_000, 5, len(frame), len(frame),
                         status | tpacket.TP_STATUS_USER, mac, mac + 14, 0, tci, 0x8100, 0)  # fmt: skip
    for i in range(len(offsets) - 1):
        struct.pack_into("=I", body, offsets[i], offsets[i + 1] - offsets[i])
    head = bytearray(first)
    struct.pack_into(
        "=IIIIIIQ", head, 0, 3, 0, tpacket.TP_STATUS_USER, len(packets), first, first + len(body), 1
    )
    return head + body


def _udp(sport: int, tagged: bool = False) -> bytes:
    layers = [Ethernet.build(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")]
    if tagged:
        layers.append(Dot1Q.build(tci=(5 << 13) | 42))
    layers += [IPv4.build(src="192.0.2.1", dst="192.0.2.2"), UDP.build(sport=sport, dport=9)]
    return stack(*layers, payload=b"abc")


def test_offloaded_vlan_tag_is_put_back() -> None:
    tagged = _udp(1, tagged=True)
    stripped = tagged[:12] + tagged[16:]  # as the NIC/kernel hands it over
    block = _synthetic_block([(stripped, tpacket.TP_STATUS_VLAN_VALID, (5 << 13) | 42), (_udp(2), 0, 0)])
    frames = tpacket.block_frames(block, 0, cooked=False)
    assert frames[0].data == tagged and frames[0].wirelen == len(tagged)
    assert decode(frames[0].data, 1)[Dot1Q].vlan == 42
    assert frames[1].data == _udp(2)


@pytest.mark.parametrize("nanosecond", [False, True])
def test_fast_pcap_path_equals_the_general_path(nanosecond: bool) -> None:
    tagged = _udp(1, tagged=True)
    blocks = [
        _block("lo.bin"),
        _synthetic_block([(tagged[:12] + tagged[16:], tpacket.TP_STATUS_VLAN_VALID, 42)]),
    ]
    for block in blocks:
        general, fast = _PcapBuffer(nanosecond), bytearray()
        general.writer.write_frames(tpacket.block_frames(block, 0, cooked=False))
        n = fastpath.block_to_pcap(memoryview(block), 0, fast, 1 if nanosecond else 1000)
        assert n == tpacket.block_header(block, 0).num_packets
        assert general.records() == bytes(fast)


def test_fast_pcapng_path_equals_the_general_path() -> None:
    block = _block("lo.bin")
    frames = tpacket.block_frames(block, 0, cooked=False)
    import io

    stream = io.BytesIO()
    writer = PcapngWriter(stream, [Interface(1, 262144, "lo")])
    start = len(stream.getvalue())
    writer.write_frames(frames, 0)
    writer.flush()
    fast = bytearray()
    fastpath.block_to_pcapng(memoryview(block), 0, fast, 0)
    assert stream.getvalue()[start:] == bytes(fast)
    decoder = Decoder()
    records = decoder.feed(stream.getvalue()[:start] + bytes(fast))
    assert [r.data for r in records] == [f.data for f in frames]
    assert all(r.direction == 1 for r in records)


class _PcapBuffer:
    def __init__(self, nanosecond: bool) -> None:
        import io

        self.stream = io.BytesIO()
        self.writer = PcapWriter(self.stream, 1, nanosecond=nanosecond)

    def records(self) -> bytes:
        self.writer.flush()
        return self.stream.getvalue()[24:]


def test_ring_request_is_consistent() -> None:
    req = tpacket.ring_request(1 << 20, 64, 10)
    block_size, block_nr, frame_size, frame_nr, tov, priv, feature = tpacket.REQ3.unpack(req)
    assert (block_size, block_nr, tov, priv, feature) == (1 << 20, 64, 10, 0, 0)
    assert frame_nr == block_size // frame_size * block_nr
    with pytest.raises(ValueError):
        tpacket.ring_request(3000, 2, 10)


@pytest.mark.parametrize(
    ("kib", "block", "count"),
    [
        (2048, 256 * 1024, 8),
        (65536, 1 << 20, 64),
        (64, 64 * 1024, 2),
        (1, 64 * 1024, 2),
        (16384, 1 << 20, 16),
    ],
)
def test_ring_sizes_for_a_buffer(kib: int, block: int, count: int) -> None:
    config = RingConfig.for_buffer(kib)
    assert (config.block_size, config.block_nr) == (block, count)
