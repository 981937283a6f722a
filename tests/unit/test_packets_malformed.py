"""Headers that lie: decode as far as true, flag it, never raise. Plus a seeded fuzz loop
(hypothesis is not installed in this environment, so mutations come from random.Random)."""

from __future__ import annotations

import random

import pytest
from test_packets_frames import IPV6_FRAGMENT, SLL2_FRAME, SLL_FRAME, SYN_FRAME, TIME_EXCEEDED, VLAN_ARP

from sockscope.packets import (
    ICMP,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    TCP,
    UDP,
    Ethernet,
    IPv4,
    IPv6,
    Packet,
    decode,
    stack,
    tcp_options,
)

SAMPLES = [
    (SYN_FRAME, LINKTYPE_ETHERNET),
    (IPV6_FRAGMENT, LINKTYPE_ETHERNET),
    (VLAN_ARP, LINKTYPE_ETHERNET),
    (TIME_EXCEEDED, LINKTYPE_ETHERNET),
    (SLL_FRAME, LINKTYPE_LINUX_SLL),
    (SLL2_FRAME, LINKTYPE_LINUX_SLL2),
    (
        stack(
            IPv6.build(src="::1", dst="::2"),
            TCP.build(options=tcp_options(mss=1, sack=[(1, 2)])),
            payload=b"data",
        ),
        LINKTYPE_IPV6,
    ),
]


def exercise(pkt: Packet) -> None:
    """Everything a consumer might touch; any exception fails the calling test."""
    assert isinstance(pkt.summary(), str)
    assert pkt.malformed is None or isinstance(pkt.malformed, str)
    for layer in pkt.layers:
        layer.fields()
        repr(layer)
        assert isinstance(layer.payload, bytes)
        for name in (
            "checksum_ok",
            "option_list",
            "mss",
            "wscale",
            "timestamps",
            "sack_blocks",
            "quoted",
            "target",
            "sender_ip",
            "target_ip",
            "src_ip",
            "dst_ip",
            "flag_string",
            "link_address",
        ):
            attr = getattr(layer, name, None)
            if callable(attr):
                attr()
        quoted = getattr(layer, "quoted_packet", None)
        if quoted is not None:
            exercise(quoted)


@pytest.mark.parametrize(("frame", "linktype"), SAMPLES)
def test_truncated_at_every_offset(frame: bytes, linktype: int) -> None:
    full = decode(frame, linktype)
    for cut in range(len(frame)):
        lying = decode(frame[:cut], linktype)
        exercise(lying)
        assert len(lying.layers) <= len(full.layers)
        snapped = decode(frame[:cut], linktype, wirelen=len(frame))
        exercise(snapped)
        # Cut by snaplen: short, but nothing lied.
        assert snapped.malformed is None, (cut, snapped.malformed)
        if cut >= _needed(full):
            assert lying.malformed is None and lying.truncated == full.truncated  # only padding went
            continue
        assert snapped.truncated, cut
        # Without the wire length, missing bytes mean the headers claim too much -- unless
        # a fragment header already said that the rest lives elsewhere.
        assert lying.malformed is not None or (lying.truncated and full.truncated), cut


def _needed(pkt: Packet) -> int:
    """Bytes the decoded headers of a complete packet account for (past them: padding)."""
    return pkt.layers[-1]._end if pkt.layers else 0


def test_every_offset_of_the_syn_is_flagged_without_wirelen() -> None:
    for cut in range(len(SYN_FRAME)):
        assert decode(SYN_FRAME[:cut]).malformed is not None, cut


def test_bad_ihl() -> None:
    frame = bytearray(SYN_FRAME)
    frame[14] = 0x44  # IHL 4: shorter than the fixed header
    pkt = decode(bytes(frame))
    assert pkt.malformed == "bad IPv4 IHL 4"
    assert [type(layer) for layer in pkt.layers] == [Ethernet, IPv4]
    exercise(pkt)
    frame[14] = 0x4F  # IHL 15: 60 bytes of header in a 60-byte datagram is allowed...
    frame[16:18] = (40).to_bytes(2, "big")  # ...but not in a 40-byte one
    assert "total length 40 < header length 60" in str(decode(bytes(frame)).malformed)


def test_ip_version_mismatch() -> None:
    frame = bytearray(SYN_FRAME)
    frame[14] = 0x65
    assert decode(bytes(frame)).malformed == "IPv4 version field is 6"


def test_tcp_data_offset_past_the_end() -> None:
    frame = bytearray(SYN_FRAME)
    frame[14 + 20 + 12] = 0xF0 | (frame[14 + 20 + 12] & 0x0F)  # 60-byte header, 40 present
    pkt = decode(bytes(frame))
    assert pkt.malformed is not None and "TCP header length 60" in pkt.malformed
    tcp = pkt[TCP]
    assert tcp.sport == 53050 and tcp.mss == 1460  # the true part still decodes
    assert pkt.summary().endswith("[malformed: " + pkt.malformed + "]")
    frame[14 + 20 + 12] = 0x40 | (frame[14 + 20 + 12] & 0x0F)  # below the minimum of 5
    assert decode(bytes(frame)).malformed == "bad TCP data offset 4"


def test_ipv6_payload_length_lies() -> None:
    wire = stack(IPv6.build(src="::1", dst="::2"), UDP.build(sport=1, dport=2), payload=b"abc")
    longer = wire[:4] + (500).to_bytes(2, "big") + wire[6:]
    pkt = decode(longer, LINKTYPE_IPV6)
    assert pkt.malformed == "IPv6 claims 540 bytes, 51 present"
    assert pkt[UDP].payload == b"abc"  # decoding went on as far as it was true
    shorter = wire[:4] + (4).to_bytes(2, "big") + wire[6:]
    pkt = decode(shorter, LINKTYPE_IPV6)
    assert pkt.malformed is not None and "truncated UDP header" in pkt.malformed


def test_udp_length_lies() -> None:
    wire = bytearray(stack(IPv4.build(src="10.0.0.1", dst="10.0.0.2"), UDP.build(), payload=b"abcd"))
    wire[24:26] = (4).to_bytes(2, "big")
    assert decode(bytes(wire), LINKTYPE_IPV4).malformed == "UDP length 4 < 8"


def test_ethernet_padding_is_not_payload() -> None:
    wire = stack(Ethernet.build(), IPv4.build(src="10.0.0.1", dst="10.0.0.2"), UDP.build(), payload=b"hi")
    pkt = decode(wire + bytes(60 - len(wire)))
    assert pkt.malformed is None and pkt[UDP].payload == b"hi"


def test_unknown_linktype_and_empty_input() -> None:
    assert decode(b"abc", 9999).malformed == "unsupported linktype 9999"
    assert decode(b"", LINKTYPE_RAW).malformed is not None
    assert decode(b"", LINKTYPE_ETHERNET).summary().startswith("linktype 1, length 0 [malformed:")


def test_quoted_packet_cut_anywhere_is_only_truncated() -> None:
    for cut in range(35 + 8, len(TIME_EXCEEDED) + 1):
        frame = bytearray(TIME_EXCEEDED[:cut])
        frame[16:18] = (cut - 14).to_bytes(2, "big")  # outer lengths stay true
        quoted = decode(bytes(frame))[ICMP].quoted_packet
        assert quoted is not None and quoted.malformed is None


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(4)
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1 and data:
            del data[rng.randrange(len(data)) :]
        elif op == 2:
            data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randrange(1, 9))
        elif data:
            # Lengths and offsets live in the first bytes of each header: hit those hard.
            i = rng.randrange(min(len(data), 80))
            data[i] = rng.choice((0, 1, 0x0F, 0x40, 0x45, 0x60, 0x7F, 0x80, 0xF0, 0xFF))
    return bytes(data)


def test_fuzz_decoders_never_raise() -> None:
    rng = random.Random(20261126)
    linktypes = (
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
    )
    for i in range(4000):
        frame, linktype = SAMPLES[i % len(SAMPLES)]
        if i % 10 == 0:
            linktype = rng.choice(linktypes)  # the wrong decoder for the bytes
        data = mutate(rng, frame)
        exercise(decode(data, linktype))
        exercise(decode(data, linktype, wirelen=len(data) + rng.randrange(3)))
