"""nfnetlink_queue codec against messages recorded from a real kernel.

data/nfqueue/record.py set up: UDP to port 5000 on loopback, mark 0x2a set in
mangle OUTPUT, queued to queue 7 from filter OUTPUT; payload b"hello divert";
uid/gid flag on; a second bind of the same queue; a copy range of 28 bytes.
"""

from __future__ import annotations

import errno
import struct
from pathlib import Path

import pytest

from sockscope.netlink import nfqueue as nfq
from sockscope.netlink.codec import NLMSG_ERROR, build_attr, error_code, iter_messages, parse_attrs
from sockscope.packets import LINKTYPE_RAW, UDP, IPv4, IPv6, decode

DATA = Path(__file__).parent / "data" / "nfqueue"


def message(name: str) -> memoryview:
    msgs = list(iter_messages((DATA / name).read_bytes()))
    assert len(msgs) == 1
    assert msgs[0].type == nfq.MSG_PACKET
    return msgs[0].payload


def test_ipv4_packet() -> None:
    pkt = nfq.parse_packet(message("packet4.bin"))
    assert (pkt.queue, pkt.hw_protocol, pkt.hook) == (7, 0x0800, 3)  # NF_INET_LOCAL_OUT
    assert pkt.mark == 0x2A
    assert (pkt.uid, pkt.gid) == (0, 0)
    assert pkt.outdev == 1 and pkt.indev is None  # lo
    assert pkt.cap_len is None and pkt.wire_len == len(pkt.payload) == 20 + 8 + 12
    decoded = decode(pkt.payload, LINKTYPE_RAW)
    assert decoded[IPv4].src_ip == "127.0.0.1"
    assert decoded[UDP].dport == 5000 and decoded.payload == b"hello divert"


def test_ipv6_packet() -> None:
    pkt = nfq.parse_packet(message("packet6.bin"))
    assert (pkt.queue, pkt.hw_protocol, pkt.mark) == (7, 0x86DD, 0x2A)
    decoded = decode(pkt.payload, LINKTYPE_RAW)
    assert decoded[IPv6].dst_ip == "::1"
    assert decoded[UDP].checksum_ok() is True


def test_ids_increase() -> None:
    first = nfq.parse_packet(message("packet4.bin")).packet_id
    assert nfq.parse_packet(message("packet6.bin")).packet_id == first + 1


def test_copy_range_cuts_payload_and_reports_length() -> None:
    pkt = nfq.parse_packet(message("capped.bin"))
    assert len(pkt.payload) == 28
    assert pkt.cap_len == pkt.wire_len == 40
    assert decode(pkt.payload, LINKTYPE_RAW, pkt.wire_len).truncated


def test_bind_and_config_are_acked() -> None:
    msgs = list(iter_messages((DATA / "bind_ack.bin").read_bytes()))
    assert [(m.type, error_code(m), m.seq) for m in msgs] == [(NLMSG_ERROR, 0, 1), (NLMSG_ERROR, 0, 2)]


def test_second_bind_is_refused() -> None:
    (msg,) = iter_messages((DATA / "busy.bin").read_bytes())
    assert msg.type == NLMSG_ERROR and error_code(msg) == errno.EPERM


def test_proc_stats() -> None:
    (stats,) = nfq.parse_proc_stats((DATA / "proc.txt").read_text())
    assert stats.queue == 7 and stats.copy_mode == nfq.NFQNL_COPY_PACKET and stats.copy_range == 65531
    assert stats.queued == 1 and stats.queue_dropped == 0 and stats.user_dropped == 0
    assert stats.portid > 0


def test_short_or_headerless_message_raises() -> None:
    with pytest.raises(ValueError):
        nfq.parse_packet(b"\0\0")
    with pytest.raises(ValueError):
        nfq.parse_packet(nfq.NFGENMSG.pack(0, 0, 7) + build_attr(nfq.NFQA_MARK, b"\0\0\0\1"))


def test_bind_payload() -> None:
    payload = nfq.bind_payload(7)
    assert nfq.NFGENMSG.unpack_from(payload) == (0, 0, 7)
    attrs = parse_attrs(payload, 4)
    assert bytes(attrs[nfq.NFQA_CFG_CMD]) == bytes([nfq.NFQNL_CFG_CMD_BIND, 0, 0, 0])
    assert bytes(parse_attrs(nfq.unbind_payload(7), 4)[nfq.NFQA_CFG_CMD])[0] == nfq.NFQNL_CFG_CMD_UNBIND


def test_config_sets_and_clears_flags_with_mask() -> None:
    payload = nfq.config_payload(
        3,
        copy_mode=nfq.NFQNL_COPY_PACKET,
        copy_range=1500,
        maxlen=100,
        set_flags=nfq.F_GSO,
        clear_flags=nfq.F_FAIL_OPEN | nfq.F_UID_GID,
    )
    attrs = parse_attrs(payload, 4)
    assert bytes(attrs[nfq.NFQA_CFG_PARAMS]) == struct.pack("!IB", 1500, nfq.NFQNL_COPY_PACKET)
    assert struct.unpack("!I", attrs[nfq.NFQA_CFG_QUEUE_MAXLEN])[0] == 100
    assert struct.unpack("!I", attrs[nfq.NFQA_CFG_MASK])[0] == nfq.F_GSO | nfq.F_FAIL_OPEN | nfq.F_UID_GID
    assert struct.unpack("!I", attrs[nfq.NFQA_CFG_FLAGS])[0] == nfq.F_GSO
    only_clear = parse_attrs(nfq.config_payload(3, clear_flags=nfq.F_GSO), 4)
    assert nfq.NFQA_CFG_PARAMS not in only_clear
    assert struct.unpack("!I", only_clear[nfq.NFQA_CFG_FLAGS])[0] == 0
    with pytest.raises(ValueError):
        nfq.config_payload(3, set_flags=nfq.F_GSO, clear_flags=nfq.F_GSO)


def test_verdict_round_trip() -> None:
    raw = nfq.verdict_message(7, 42, nfq.NF_ACCEPT, mark=5, payload=b"E" * 20)
    (msg,) = iter_messages(raw)
    assert msg.type == nfq.MSG_VERDICT
    assert nfq.parse_verdict(msg.payload) == (7, nfq.NF_ACCEPT, 42, 5, b"E" * 20)
    (plain,) = iter_messages(nfq.verdict_message(7, 43, nfq.NF_DROP))
    assert nfq.parse_verdict(plain.payload) == (7, nfq.NF_DROP, 43, None, None)


def test_batch_verdict() -> None:
    (msg,) = iter_messages(nfq.batch_verdict_message(2, 99, nfq.NF_REPEAT, mark=0x10))
    assert msg.type == nfq.MSG_VERDICT_BATCH
    assert nfq.parse_verdict(msg.payload) == (2, nfq.NF_REPEAT, 99, 0x10, None)
