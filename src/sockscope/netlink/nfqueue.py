"""Sans-IO nfnetlink_queue (NFQUEUE): queue configuration, queued packets, verdicts.

Message layout (linux/netfilter/nfnetlink_queue.h): an nlmsghdr whose type is
``NFNL_SUBSYS_QUEUE << 8 | msg``, then ``struct nfgenmsg`` (family, version, queue
number big-endian), then attributes. Attribute values are big-endian.

Nothing here opens a socket: `divert.engine` sends what these functions build and
hands what it receives to `parse_packet`. Tested with recorded kernel messages
(tests/unit/data/nfqueue).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from sockscope.netlink.codec import NLM_F_REQUEST, build_attr, build_message, parse_attrs

NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
MSG_PACKET = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET
MSG_VERDICT = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT
MSG_CONFIG = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_CONFIG
MSG_VERDICT_BATCH = NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT_BATCH

# Packet attributes (enum nfqnl_attr_type).
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_TIMESTAMP = 4
NFQA_IFINDEX_INDEV = 5
NFQA_IFINDEX_OUTDEV = 6
NFQA_IFINDEX_PHYSINDEV = 7
NFQA_IFINDEX_PHYSOUTDEV = 8
NFQA_HWADDR = 9
NFQA_PAYLOAD = 10
NFQA_CT = 11
NFQA_CT_INFO = 12
NFQA_CAP_LEN = 13
NFQA_SKB_INFO = 14
NFQA_UID = 16
NFQA_GID = 17
NFQA_PRIORITY = 21

# Configuration (enum nfqnl_attr_config, nfqnl_msg_config_cmds, copy modes).
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_CFG_CMD_UNBIND = 2
NFQNL_COPY_NONE = 0
NFQNL_COPY_META = 1
NFQNL_COPY_PACKET = 2

# Queue flags: each is set or cleared through NFQA_CFG_MASK (bits to touch) + FLAGS.
F_FAIL_OPEN = 1 << 0  # accept instead of drop when the queue is full
F_CONNTRACK = 1 << 1  # attach conntrack state (NFQA_CT, NFQA_CT_INFO)
F_GSO = 1 << 2  # hand over GSO packets whole instead of segmenting them first
F_UID_GID = 1 << 3  # attach uid/gid of the sending socket
F_SECCTX = 1 << 4

# NFQA_SKB_INFO bits.
SKB_CSUMNOTREADY = 1 << 0  # transport checksum not filled in yet (offload)
SKB_GSO = 1 << 1
SKB_CSUM_NOTVERIFIED = 1 << 2

# Verdicts (linux/netfilter.h).
NF_DROP = 0
NF_ACCEPT = 1
NF_REPEAT = 4

NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (queue number)
_CFG_CMD = struct.Struct("!BxH")  # command, pad, pf
_CFG_PARAMS = struct.Struct("!IB")  # copy_range, copy_mode (packed: 5 bytes)
_VERDICT_HDR = struct.Struct("!II")  # verdict, packet id
_PACKET_HDR = struct.Struct("!IHB")  # packet id, hw protocol (EtherType), hook
_BE32 = struct.Struct("!I")
_HW = struct.Struct("!H2x8s")


def _nfgen(queue: int) -> bytes:
    return NFGENMSG.pack(0, 0, queue)  # AF_UNSPEC, NFNETLINK_V0


def _be32(value: int) -> bytes:
    return _BE32.pack(value & 0xFFFFFFFF)


def bind_payload(queue: int) -> bytes:
    """MSG_CONFIG payload binding the socket to ``queue`` (EBUSY if another socket holds it)."""
    return _nfgen(queue) + build_attr(NFQA_CFG_CMD, _CFG_CMD.pack(NFQNL_CFG_CMD_BIND, 0))


def unbind_payload(queue: int) -> bytes:
    return _nfgen(queue) + build_attr(NFQA_CFG_CMD, _CFG_CMD.pack(NFQNL_CFG_CMD_UNBIND, 0))


def config_payload(
    queue: int,
    *,
    copy_mode: int | None = None,
    copy_range: int = 0xFFFF,
    maxlen: int | None = None,
    set_flags: int = 0,
    clear_flags: int = 0,
) -> bytes:
    """MSG_CONFIG payload: copy mode and range, queue length and flags of a bound queue.

    Flags in ``set_flags`` are turned on, those in ``clear_flags`` off, the others
    left as they are (NFQA_CFG_MASK names the bits the message touches).
    """
    if set_flags & clear_flags:
        raise ValueError("a queue flag cannot be both set and cleared")
    attrs = b""
    if copy_mode is not None:
        attrs += build_attr(NFQA_CFG_PARAMS, _CFG_PARAMS.pack(copy_range, copy_mode))
    if maxlen is not None:
        attrs += build_attr(NFQA_CFG_QUEUE_MAXLEN, _be32(maxlen))
    if set_flags | clear_flags:
        attrs += build_attr(NFQA_CFG_MASK, _be32(set_flags | clear_flags))
        attrs += build_attr(NFQA_CFG_FLAGS, _be32(set_flags))
    return _nfgen(queue) + attrs


def verdict_message(
    queue: int, packet_id: int, verdict: int, *, mark: int | None = None, payload: bytes | None = None
) -> bytes:
    """The verdict on one packet, optionally with a new mark and a new payload.

    Not ACKed (a verdict per packet is the hot path); an unknown id still earns an
    NLMSG_ERROR, which the engine counts.
    """
    attrs = build_attr(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(verdict, packet_id))
    if mark is not None:
        attrs += build_attr(NFQA_MARK, _be32(mark))
    if payload is not None:
        attrs += build_attr(NFQA_PAYLOAD, payload)
    return build_message(MSG_VERDICT, NLM_F_REQUEST, 0, _nfgen(queue) + attrs)


def batch_verdict_message(queue: int, last_id: int, verdict: int, *, mark: int | None = None) -> bytes:
    """One verdict for every packet still queued whose id is <= ``last_id``."""
    attrs = build_attr(NFQA_VERDICT_HDR, _VERDICT_HDR.pack(verdict, last_id))
    if mark is not None:
        attrs += build_attr(NFQA_MARK, _be32(mark))
    return build_message(MSG_VERDICT_BATCH, NLM_F_REQUEST, 0, _nfgen(queue) + attrs)


@dataclass(frozen=True, slots=True)
class QueuedPacket:
    """One NFQNL_MSG_PACKET: the packet and what the kernel tells about it."""

    queue: int
    packet_id: int
    hw_protocol: int  # EtherType: 0x0800 IPv4, 0x86dd IPv6
    hook: int  # NF_INET_PRE_ROUTING=0, LOCAL_IN=1, FORWARD=2, LOCAL_OUT=3, POST_ROUTING=4
    payload: bytes  # the IP packet (copy mode "packet"), possibly cut at the copy range
    mark: int = 0
    indev: int | None = None  # interface indexes
    outdev: int | None = None
    in_interface: str | None = None  # their names, when the parser was given a lookup
    out_interface: str | None = None
    hwaddr: bytes | None = None
    uid: int | None = None  # of the sending socket (flag F_UID_GID)
    gid: int | None = None
    cap_len: int | None = None  # original length when the copy range cut the payload
    skb_info: int = 0  # SKB_* bits
    ct_info: int | None = None  # conntrack state (flag F_CONNTRACK)
    timestamp: float | None = None

    @property
    def wire_len(self) -> int:
        return self.cap_len if self.cap_len is not None else len(self.payload)


def parse_packet(
    msg_payload: bytes | memoryview, ifname: Callable[[int], str | None] | None = None
) -> QueuedPacket:
    """Parse the payload of an NFQNL_MSG_PACKET message (nfgenmsg onwards); ``ifname``
    (index -> name) fills in the interface names."""
    view = memoryview(msg_payload)
    if len(view) < NFGENMSG.size:
        raise ValueError(f"nfqueue packet message of {len(view)} bytes is too short")
    _family, _version, queue = NFGENMSG.unpack_from(view)
    attrs = parse_attrs(view, NFGENMSG.size)
    hdr = attrs.get(NFQA_PACKET_HDR)
    if hdr is None or len(hdr) < _PACKET_HDR.size:
        raise ValueError("nfqueue packet message without a packet header")
    packet_id, hw_protocol, hook = _PACKET_HDR.unpack_from(hdr)

    def be32(attr: int) -> int | None:
        value = attrs.get(attr)
        return int(_BE32.unpack_from(value)[0]) if value is not None and len(value) >= 4 else None

    hwaddr = None
    if (hw := attrs.get(NFQA_HWADDR)) is not None and len(hw) >= _HW.size:
        addrlen, raw = _HW.unpack_from(hw)
        hwaddr = raw[: min(addrlen, 8)]
    timestamp = None
    if (ts := attrs.get(NFQA_TIMESTAMP)) is not None and len(ts) >= 16:
        sec, usec = struct.unpack_from("!QQ", ts)
        timestamp = sec + usec / 1e6
    payload = attrs.get(NFQA_PAYLOAD)
    indev, outdev = be32(NFQA_IFINDEX_INDEV), be32(NFQA_IFINDEX_OUTDEV)
    return QueuedPacket(
        queue=queue,
        packet_id=packet_id,
        hw_protocol=hw_protocol,
        hook=hook,
        payload=bytes(payload) if payload is not None else b"",
        mark=be32(NFQA_MARK) or 0,
        indev=indev,
        outdev=outdev,
        in_interface=ifname(indev) if ifname is not None and indev is not None else None,
        out_interface=ifname(outdev) if ifname is not None and outdev is not None else None,
        hwaddr=hwaddr,
        uid=be32(NFQA_UID),
        gid=be32(NFQA_GID),
        cap_len=be32(NFQA_CAP_LEN),
        skb_info=be32(NFQA_SKB_INFO) or 0,
        ct_info=be32(NFQA_CT_INFO),
        timestamp=timestamp,
    )


def parse_verdict(msg_payload: bytes | memoryview) -> tuple[int, int, int, int | None, bytes | None]:
    """(queue, verdict, packet id, mark, payload) of a verdict message we built."""
    view = memoryview(msg_payload)
    _family, _version, queue = NFGENMSG.unpack_from(view)
    attrs = parse_attrs(view, NFGENMSG.size)
    verdict, packet_id = _VERDICT_HDR.unpack_from(attrs[NFQA_VERDICT_HDR])
    mark = attrs.get(NFQA_MARK)
    payload = attrs.get(NFQA_PAYLOAD)
    return (
        queue,
        verdict,
        packet_id,
        int(_BE32.unpack_from(mark)[0]) if mark is not None else None,
        bytes(payload) if payload is not None else None,
    )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue: int
    portid: int  # netlink port id of the bound socket
    queued: int  # packets waiting for a verdict now
    copy_mode: int
    copy_range: int
    queue_dropped: int  # dropped because the queue was full (maxlen)
    user_dropped: int  # dropped because the netlink socket buffer was full (ENOBUFS)
    last_id: int


def parse_proc_stats(text: str) -> list[QueueStats]:
    """Parse /proc/net/netfilter/nfnetlink_queue (one queue per line, 9 numbers)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        out.append(QueueStats(*(int(f) for f in fields[:8])))
    return out
