"""TPACKET_V3 ring layout, sans-IO: the structures the kernel writes into a packet
socket's memory-mapped receive ring, and the walk over one block of it.

The ring is ``block_nr`` blocks of ``block_size`` bytes. The kernel fills a block with
packets one after another and hands it over whole (status TP_STATUS_USER) when it is
full or when the block timeout expires; the reader walks its packets and gives the
block back by writing TP_STATUS_KERNEL. Per packet the kernel writes a
``tpacket3_hdr``, a ``sockaddr_ll`` and the frame, each packet pointing at the next.

Everything here takes a buffer (the mmap, or recorded bytes in tests) and offsets.
"""

from __future__ import annotations

import struct
from socket import ntohs
from typing import NamedTuple

from sockscope.packets.sll import PACKET_OUTGOING  # sll_pkttype values live with the SLL header

TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6


# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1:
# block_status, num_pkts, offset_to_first_pkt, blk_len, seq_num (u64), ts_first, ts_last.
BLOCK_DESC = struct.Struct("=IIIIIIQIIII")
BLOCK_STATUS_OFFSET = 8
# struct tpacket3_hdr: next_offset, sec, nsec, snaplen, len, status, mac, net, then
# hv1 (rxhash, vlan_tci, vlan_tpid, padding) and 8 bytes of padding: 48 bytes.
PACKET_HDR = struct.Struct("=IIIIIIHHIIHH8x")
# struct sockaddr_ll right after the aligned header: family, protocol (big-endian on
# the wire but stored as is), ifindex, hatype, pkttype, halen, addr[8].
SOCKADDR_LL = struct.Struct("=HHiHBB8s")
SOCKADDR_LL_OFFSET = 48  # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
# struct tpacket_req3: block_size, block_nr, frame_size, frame_nr, retire_blk_tov,
# sizeof_priv, feature_req_word.
REQ3 = struct.Struct("=IIIIIII")
# struct tpacket_stats_v3: packets (received, including drops), drops, freeze_q_cnt.
STATS_V3 = struct.Struct("=III")

# The packet header and the sockaddr_ll after it, read in one unpack.
assert PACKET_HDR.size == SOCKADDR_LL_OFFSET
_HEAD_PLUS_LL = struct.Struct(PACKET_HDR.format + SOCKADDR_LL.format.lstrip("="))
# The cooked (LINKTYPE_LINUX_SLL) header built for SOCK_DGRAM captures: packet type,
# ARPHRD type, address length, address (8 bytes), protocol; all big-endian.
_SLL = struct.Struct("!HHH8sH")


class BlockHeader(NamedTuple):
    status: int
    num_packets: int
    first_offset: int
    length: int
    seq: int


class Frame(NamedTuple):
    """One packet as read from the ring; ``data`` is a copy, the ring is reused."""

    sec: int
    nsec: int
    data: bytes
    wirelen: int
    ifindex: int
    pkttype: int
    direction: int  # pcapng epb_flags direction: 1 inbound, 2 outbound


def block_header(buf: bytes | bytearray | memoryview, offset: int) -> BlockHeader:
    _version, _priv, status, num, first, length, seq, *_ts = BLOCK_DESC.unpack_from(buf, offset)
    return BlockHeader(status, num, first, length, seq)


def block_ready(buf: bytes | bytearray | memoryview, offset: int) -> bool:
    return bool(buf[offset + BLOCK_STATUS_OFFSET] & TP_STATUS_USER)


def release_block(buf: bytearray | memoryview, offset: int) -> None:
    """Give the block back to the kernel (status TP_STATUS_KERNEL)."""
    struct.pack_into("=I", buf, offset + BLOCK_STATUS_OFFSET, TP_STATUS_KERNEL)


def block_frames(buf: bytes | bytearray | memoryview, offset: int, cooked: bool) -> list[Frame]:
    """The packets of the block at ``offset``.

    ``cooked``: the socket is SOCK_DGRAM, so the kernel stored the frame from the
    network header on and a LINKTYPE_LINUX_SLL header is built in front of it from
    the sockaddr_ll. Otherwise the frame is taken from its link header, with a VLAN
    tag the kernel moved out of it (offloading) put back in place.
    """
    _v, _p, _status, num, pos, *_rest = BLOCK_DESC.unpack_from(buf, offset)
    pos += offset
    unpack = _HEAD_PLUS_LL.unpack_from
    out: list[Frame] = []
    append = out.append
    for _ in range(num):
        (nxt, sec, nsec, snap, wirelen, status, mac, net, _hash, tci, tpid, _pad,
         _fam, proto, ifindex, hatype, pkttype, halen, addr) = unpack(buf, pos)  # fmt: skip
        if cooked:
            start = pos + net
            # sll_protocol is stored in network order and was unpacked natively.
            head = _SLL.pack(pkttype, hatype, halen, addr, ntohs(proto))
            data = head + bytes(buf[start : start + snap])
            # tp_len counts from the network header too; the SLL header is ours.
            wirelen += _SLL.size
        elif status & TP_STATUS_VLAN_VALID:
            data = _with_vlan(bytes(buf[pos + mac : pos + mac + snap]), tci, tpid, status)
            wirelen += 4
        else:
            data = bytes(buf[pos + mac : pos + mac + snap])
        append(Frame(sec, nsec, data, wirelen, ifindex, pkttype, 2 if pkttype == PACKET_OUTGOING else 1))
        pos += nxt
    return out


def _with_vlan(frame: bytes, tci: int, tpid: int, status: int) -> bytes:
    """Put an offloaded 802.1Q tag back after the MAC addresses, as libpcap does."""
    if not status & TP_STATUS_VLAN_TPID_VALID or tpid == 0:
        tpid = 0x8100
    return frame[:12] + struct.pack("!HH", tpid, tci & 0xFFFF) + frame[12:]


def ring_request(block_size: int, block_nr: int, block_timeout_ms: int, frame_size: int = 2048) -> bytes:
    """A tpacket_req3 for PACKET_RX_RING.

    In V3 packets are packed at their own length; frame_size/frame_nr only have to be
    consistent (the kernel checks frames per block x blocks == frames).
    """
    if block_size % frame_size:
        raise ValueError(f"block size {block_size} is not a multiple of {frame_size}")
    frame_nr = block_size // frame_size * block_nr
    return REQ3.pack(block_size, block_nr, frame_size, frame_nr, block_timeout_ms, 0, 0)
