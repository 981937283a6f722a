"""Property tests (hypothesis): the decoders never raise on any bytes, and the quick
summary path (packets/quick.py) says exactly what the full decoder says."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_packets_malformed import SAMPLES, exercise

from sockscope.packets import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    TCP,
    UDP,
    Ethernet,
    IPv4,
    IPv6,
    decode,
    stack,
    tcp_options,
)
from sockscope.packets.jsonify import layer_dict
from sockscope.packets.quick import summarizer
from sockscope.packets.sll import SLL

LINKTYPES = [1, 101, 113, 228, 229, 276]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frames_for_quick() -> st.SearchStrategy[tuple[bytes, int]]:
    """Well-formed TCP/UDP over IPv4/IPv6 on Ethernet or SLL, the quick path's ground."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[bytes, int]:
        v6 = draw(st.booleans())
        ip = (
            IPv6.build(src=f"2001:db8::{draw(st.integers(1, 0xFFFF)):x}", dst="2001:db8::2")
            if v6
            else IPv4.build(src=f"192.0.2.{draw(st.integers(1, 254))}", dst="198.51.100.7")
        )
        payload = draw(st.binary(max_size=40))
        if draw(st.booleans()):
            opts = draw(
                st.sampled_from(
                    [
                        b"",
                        tcp_options(mss=1460),
                        tcp_options(mss=1, sack_ok=True, ts=(5, 6), wscale=7),
                        tcp_options(sack=[(1, 9)]),
                    ]
                )
            )
            l4 = TCP.build(
                sport=draw(st.integers(0, 65535)),
                dport=draw(st.integers(0, 65535)),
                seq=draw(st.integers(0, 2**32 - 1)),
                ack=draw(st.integers(0, 2**32 - 1)),
                flags=draw(st.integers(0, 0x1FF)),
                window=draw(st.integers(0, 65535)),
                urgent=draw(st.integers(0, 65535)),
                options=opts,
            )
        else:
            l4 = UDP.build(sport=draw(st.integers(0, 65535)), dport=draw(st.integers(0, 65535)))
        if draw(st.booleans()):
            return stack(Ethernet.build(), ip, l4, payload=payload), LINKTYPE_ETHERNET
        return stack(SLL.build(), ip, l4, payload=payload), LINKTYPE_LINUX_SLL

    return build()


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(LINKTYPES))
def test_any_bytes_decode_without_raising(data: bytes, linktype: int) -> None:
    pkt = decode(data, linktype)
    exercise(pkt)
    for layer in pkt.layers:
        layer_dict(layer)


@SETTINGS
@given(st.sampled_from(SAMPLES), st.data())
def test_mutated_real_frames_decode_without_raising(sample: tuple[bytes, int], data: st.DataObject) -> None:
    frame, linktype = sample
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    exercise(decode(bytes(raw[:cut]), linktype, wirelen=data.draw(st.sampled_from([None, len(raw)]))))


@SETTINGS
@given(frames_for_quick(), st.data())
def test_quick_summary_equals_the_decoder(sample: tuple[bytes, int], data: st.DataObject) -> None:
    frame, linktype = sample
    quick = summarizer(linktype)
    assert quick(frame, len(frame)) == decode(frame, linktype, len(frame)).summary()
    # Lies and cuts too: the quick path must either agree or hand over to the decoder.
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    wirelen = data.draw(st.sampled_from([len(cut), len(raw)]))
    assert quick(cut, wirelen) == decode(cut, linktype, wirelen).summary()


@SETTINGS
@given(frames_for_quick(), st.data())
def test_flow_keys_equal_the_decoder(sample: tuple[bytes, int], data: st.DataObject) -> None:
    from sockscope.packets.quick import decoded_flow_key, flow_keyer, flow_text

    frame, linktype = sample
    key = flow_keyer(linktype)
    whole = key(frame)
    assert whole is not None and whole == decoded_flow_key(frame, linktype)
    assert flow_text(whole).split()[0] in ("tcp", "udp")
    raw = bytearray(frame)
    for _ in range(data.draw(st.integers(0, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    assert key(cut) == decoded_flow_key(cut, linktype)


def test_quick_summary_on_options_that_parse_to_nothing() -> None:
    # Found by the property test above: EOL-only option bytes still print "options []".
    frame = stack(Ethernet.build(), IPv4.build(), TCP.build(options=b"\0\0\0\0"), payload=b"x")
    assert summarizer(1)(frame, len(frame)) == decode(frame, 1).summary()
    assert "options []" in decode(frame, 1).summary()
