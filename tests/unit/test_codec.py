"""The netlink codec: framing, attributes, dump reassembly across buffers."""

from __future__ import annotations

import struct

from sockscope.netlink import codec


def test_attr_roundtrip_and_padding() -> None:
    a = codec.build_attr(1, b"abc")
    assert len(a) == 8 and a[4:7] == b"abc"
    b = codec.build_attr(2 | codec.NLA_F_NESTED, struct.pack("=I", 7))
    attrs = codec.parse_attrs(a + b)
    assert bytes(attrs[1]) == b"abc"
    assert codec.attr_u32(attrs[2]) == 7  # the nested flag is masked off the type
    assert [t for t, _ in codec.iter_attrs(a + a)] == [1, 1]


def test_string_attr_stops_at_nul() -> None:
    (value,) = codec.parse_attrs(codec.build_attr(3, b"cubic\0junk")).values()
    assert codec.attr_str(value) == "cubic"


def test_dump_spans_buffers_and_ignores_other_sequences() -> None:
    m1 = codec.build_message(20, codec.NLM_F_MULTI, 5, b"one\0")
    stale = codec.build_message(20, codec.NLM_F_MULTI, 4, b"old\0")
    m2 = codec.build_message(20, codec.NLM_F_MULTI | codec.NLM_F_DUMP_INTR, 5, b"two\0")
    done = codec.build_message(codec.NLMSG_DONE, codec.NLM_F_MULTI, 5, struct.pack("=i", 0))
    c = codec.DumpCollector(5)
    first = c.feed(m1 + stale)
    assert [bytes(m.payload) for m in first] == [b"one\0"] and not c.done
    second = c.feed(m2 + done)
    assert [bytes(m.payload) for m in second] == [b"two\0"]
    assert c.done and c.interrupted


def test_ack_ends_request() -> None:
    ack = codec.build_message(codec.NLMSG_ERROR, 0, 9, struct.pack("=i", 0) + bytes(16))
    c = codec.DumpCollector(9)
    assert c.feed(ack) == [] and c.done
