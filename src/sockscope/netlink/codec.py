"""Sans-IO netlink codec: message headers, attributes, dump reassembly.

Pure functions over bytes. Nothing here opens a socket, so every parser is
tested against recorded kernel bytes (tests/unit/data).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLA_HDR = struct.Struct("=HH")  # nla_len, nla_type

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_DUMP_INTR = 0x10

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF


def align4(n: int) -> int:
    return (n + 3) & ~3


class NetlinkError(OSError):
    """The kernel answered a request with a negative errno."""


class Message:
    """One netlink message: header fields and a view of its payload.

    A plain slotted class, not a frozen dataclass: dumps create tens of
    thousands of these and frozen dataclasses are several times slower to build.
    """

    __slots__ = ("flags", "payload", "pid", "seq", "type")

    def __init__(self, type: int, flags: int, seq: int, pid: int, payload: memoryview) -> None:
        self.type = type
        self.flags = flags
        self.seq = seq
        self.pid = pid
        self.payload = payload

    def __repr__(self) -> str:
        return f"Message(type={self.type}, flags={self.flags:#x}, seq={self.seq}, len={len(self.payload)})"


def build_message(msg_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    """Frame ``payload`` (already padded as the family wants) in an nlmsghdr."""
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, seq, pid) + payload


def build_attr(attr_type: int, value: bytes) -> bytes:
    """One attribute, padded to four bytes."""
    length = NLA_HDR.size + len(value)
    return NLA_HDR.pack(length, attr_type) + value + b"\0" * (align4(length) - length)


def iter_messages(buf: bytes | memoryview) -> Iterator[Message]:
    """Split a receive buffer into messages. Truncated tails raise ValueError."""
    view = memoryview(buf)
    end = len(view)
    off = 0
    unpack = NLMSG_HDR.unpack_from
    while off + 16 <= end:
        length, mtype, flags, seq, pid = unpack(view, off)
        if length < 16 or off + length > end:
            raise ValueError(f"netlink message length {length} at offset {off} is invalid")
        yield Message(mtype, flags, seq, pid, view[off + 16 : off + length])
        off += align4(length)


def parse_attrs(buf: bytes | memoryview, offset: int = 0) -> dict[int, memoryview]:
    """Attributes from ``offset`` to the end as {type: payload}; a later duplicate wins."""
    view = memoryview(buf)
    out: dict[int, memoryview] = {}
    end = len(view)
    unpack = NLA_HDR.unpack_from
    while offset + 4 <= end:
        length, atype = unpack(view, offset)
        if length < 4 or offset + length > end:
            break
        out[atype & NLA_TYPE_MASK] = view[offset + 4 : offset + length]
        offset += align4(length)
    return out


def iter_attrs(buf: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, memoryview]]:
    """Attributes in order, duplicates kept (for lists such as IFA addresses)."""
    view = memoryview(buf)
    end = len(view)
    unpack = NLA_HDR.unpack_from
    while offset + 4 <= end:
        length, atype = unpack(view, offset)
        if length < 4 or offset + length > end:
            return
        yield atype & NLA_TYPE_MASK, view[offset + 4 : offset + length]
        offset += align4(length)


def attr_u32(value: memoryview) -> int:
    return int(struct.unpack_from("=I", value)[0])


def attr_u64(value: memoryview) -> int:
    return int(struct.unpack_from("=Q", value)[0])


def attr_str(value: memoryview) -> str:
    """A NUL-terminated string attribute."""
    raw = bytes(value)
    nul = raw.find(b"\0")
    return (raw if nul < 0 else raw[:nul]).decode("utf-8", "replace")


def error_code(msg: Message) -> int:
    """The (positive) errno of an NLMSG_ERROR message; 0 means an ACK."""
    (err,) = struct.unpack_from("=i", msg.payload)
    return -int(err)


class DumpCollector:
    """Reassembles the reply to one dump request from successive receive buffers.

    Feed each buffer to :meth:`feed`, which returns the data messages it held;
    :attr:`done` turns true at NLMSG_DONE. A kernel error raises NetlinkError.
    ``interrupted`` records NLM_F_DUMP_INTR (the table changed mid-dump): the
    caller decides whether to repeat.
    """

    __slots__ = ("done", "interrupted", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.done = False
        self.interrupted = False

    def feed_payloads(self, buf: bytes) -> list[memoryview]:
        """Like :meth:`feed` but only the payloads of data messages: the fast path
        for large dumps (no Message object per socket)."""
        view = memoryview(buf)
        end = len(view)
        off = 0
        out: list[memoryview] = []
        append = out.append
        unpack = NLMSG_HDR.unpack_from
        seq = self.seq
        while off + 16 <= end:
            length, mtype, flags, mseq, _pid = unpack(view, off)
            if length < 16 or off + length > end:
                raise ValueError(f"netlink message length {length} at offset {off} is invalid")
            if mtype > NLMSG_OVERRUN and mseq == seq:
                if flags & NLM_F_DUMP_INTR:
                    self.interrupted = True
                append(view[off + 16 : off + length])
            elif mseq == seq and mtype in (NLMSG_DONE, NLMSG_ERROR):
                # Rare control messages take the general path.
                self.feed(view[off : off + length])
                break
            off += (length + 3) & ~3
        return out

    def feed(self, buf: bytes | memoryview) -> list[Message]:
        out: list[Message] = []
        for msg in iter_messages(buf):
            if msg.seq != self.seq:
                continue  # a stale reply to an earlier request on this socket
            if msg.flags & NLM_F_DUMP_INTR:
                self.interrupted = True
            if msg.type == NLMSG_DONE:
                self.done = True
                # Some families put an errno in DONE's payload (e.g. EINTR-ish aborts).
                if len(msg.payload) >= 4:
                    (err,) = struct.unpack_from("=i", msg.payload)
                    if err < 0:
                        raise NetlinkError(-err, _strerror(-err))
                break
            if msg.type == NLMSG_ERROR:
                code = error_code(msg)
                self.done = True
                if code:
                    raise NetlinkError(code, _strerror(code))
                break
            if msg.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                continue
            out.append(msg)
        return out


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)
