"""Ring blocks straight into pcap / pcapng bytes: the hot path of ``capture -w``.

The general path (``tpacket.block_frames`` then a writer's ``write_frames``) makes a
``Frame`` tuple and a ``bytes`` copy per packet. Here one loop reads each packet's
header from the ring and appends the file record and a slice of the ring to the
output buffer: about a third of the Python work per packet, which is what lets a
Python capture keep up with a million packets a second. Packets with an offloaded
VLAN tag take the general route (the tag must be put back into the frame).
"""

from __future__ import annotations

import struct

from sockscope.capture.tpacket import BLOCK_DESC, TP_STATUS_VLAN_VALID, _with_vlan
from sockscope.packets.sll import PACKET_OUTGOING
from sockscope.pcap.pcapfile import RECORD_HEADER
from sockscope.pcap.pcapng import EPB, EPB_DIRECTION_OPTIONS

# tpacket3_hdr's next_offset, sec, nsec, snaplen, len, status, mac, net; then, 30 bytes
# on, sockaddr_ll's pkttype (the header is 48 bytes, pkttype is at 10 in sockaddr_ll).
_PKT = struct.Struct("=IIIIIIHH30xB")
_VLAN = struct.Struct("=IIHH8x")  # tpacket3_hdr from offset 28: rxhash, vlan_tci, vlan_tpid
_EPB_HEAD = struct.Struct("<IIIIIII")
# epb_flags by "is it outgoing": 2 outbound, 1 inbound (then the end of options).
_FLAGS = {True: EPB_DIRECTION_OPTIONS[2], False: EPB_DIRECTION_OPTIONS[1]}


def block_to_pcap(view: memoryview, offset: int, out: bytearray, frac_div: int) -> int:
    """Append the block's packets as classic pcap records (timestamps in units of
    ``frac_div`` ns: 1000 for µs files, 1 for ns files); return how many."""
    num: int
    pos: int
    num, pos = BLOCK_DESC.unpack_from(view, offset)[3:5]
    pos += offset
    unpack, pack = _PKT.unpack_from, RECORD_HEADER.pack
    for _ in range(num):
        nxt, sec, nsec, snap, wirelen, status, mac, _net, _pkttype = unpack(view, pos)
        start = pos + mac
        if status & TP_STATUS_VLAN_VALID:
            _hash, tci, tpid, _pad = _VLAN.unpack_from(view, pos + 28)
            data = _with_vlan(bytes(view[start : start + snap]), tci, tpid, status)
            out += pack(sec, nsec // frac_div, len(data), wirelen + 4)
            out += data
        else:
            out += pack(sec, nsec // frac_div, snap, wirelen)
            out += view[start : start + snap]
        pos += nxt
    return num


def block_to_pcapng(view: memoryview, offset: int, out: bytearray, interface_id: int) -> int:
    """Append the block's packets as Enhanced Packet Blocks (ns timestamps) with the
    direction in epb_flags; return how many."""
    num: int
    pos: int
    num, pos = BLOCK_DESC.unpack_from(view, offset)[3:5]
    pos += offset
    unpack, pack = _PKT.unpack_from, _EPB_HEAD.pack
    pads = (b"", b"\0\0\0", b"\0\0", b"\0")
    for _ in range(num):
        nxt, sec, nsec, snap, wirelen, status, mac, _net, pkttype = unpack(view, pos)
        start = pos + mac
        if status & TP_STATUS_VLAN_VALID:
            _hash, tci, tpid, _pad = _VLAN.unpack_from(view, pos + 28)
            data: bytes | memoryview = _with_vlan(bytes(view[start : start + snap]), tci, tpid, status)
            wirelen += 4
        else:
            data = view[start : start + snap]
        caplen = len(data)
        pad = pads[caplen & 3]
        opts = _FLAGS[pkttype == PACKET_OUTGOING]
        total = 32 + caplen + len(pad) + len(opts)
        ts = sec * 1_000_000_000 + nsec
        out += pack(EPB, total, interface_id, ts >> 32, ts & 0xFFFFFFFF, caplen, wirelen)
        out += data
        out += pad
        out += opts
        out += total.to_bytes(4, "little")
        pos += nxt
    return num
