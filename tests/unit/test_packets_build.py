"""Builders: chosen fields survive, derived fields are filled, decode reads it all back."""

from __future__ import annotations

import pytest

from sockscope.packets import (
    ACK,
    AH,
    ARP,
    ICMP,
    IP_DF,
    IP_MF,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_RAW,
    PSH,
    SYN,
    TCP,
    UDP,
    DestOptions,
    Dot1Q,
    Ethernet,
    Fragment,
    HopByHop,
    ICMPv6,
    IPv4,
    IPv6,
    Routing,
    decode,
    stack,
    tcp_options,
)
from sockscope.packets.checksum import verify


def test_ipv4_udp_round_trip_with_chosen_fields() -> None:
    wire = stack(
        IPv4.build(
            src="192.0.2.1",
            dst="192.0.2.2",
            ttl=3,
            tos=0x10,
            ident=77,
            flags_frag=IP_DF,
            options=b"\x94\x04\x00",
        ),  # router alert, one byte short of a word
        UDP.build(sport=40000, dport=33434),
        payload=b"probe",
    )
    pkt = decode(wire, LINKTYPE_IPV4)
    ip, udp = pkt[IPv4], pkt[UDP]
    assert (ip.ttl, ip.tos, ip.ident, ip.df, ip.proto) == (3, 0x10, 77, True, 17)
    assert ip.options == b"\x94\x04\x00\x00" and ip.header_len == 24  # padded to a word
    assert ip.option_list == [(0x94, b"\x00\x00")]
    assert ip.total_len == len(wire) == 24 + 8 + 5
    assert ip.checksum_ok() and udp.checksum_ok()
    assert (udp.sport, udp.dport, udp.length, udp.payload) == (40000, 33434, 13, b"probe")
    assert pkt.malformed is None


def test_explicit_values_are_not_overwritten() -> None:
    wire = stack(
        IPv4.build(src="192.0.2.1", dst="192.0.2.2", checksum=0xBEEF, proto=99),
        UDP.build(checksum=0x1234, length=100),
        payload=b"x",
    )
    pkt = decode(wire, LINKTYPE_IPV4)
    assert pkt[IPv4].checksum == 0xBEEF and pkt[IPv4].checksum_ok() is False
    assert pkt[IPv4].proto == 99 and UDP not in pkt  # 99 is nothing we decode
    assert pkt.payload[:8] == bytes.fromhex("0000 0000 0064 1234")


def test_tcp_flags_options_and_payload() -> None:
    opts = tcp_options(mss=1400, sack_ok=True, ts=(7, 9), wscale=10, sack=[(100, 200), (300, 400)])
    assert len(opts) % 4 == 0
    wire = stack(
        IPv6.build(src="2001:db8::1", dst="2001:db8::2", hop_limit=9),
        TCP.build(sport=5, dport=6, seq=10, ack=20, flags=PSH | ACK, window=512, options=opts),
        payload=b"hello",
    )
    pkt = decode(wire, LINKTYPE_IPV6)
    tcp = pkt[TCP]
    assert pkt[IPv6].payload_len == len(wire) - 40 and pkt[IPv6].hop_limit == 9
    assert tcp.flags == PSH | ACK and tcp.flag_string == "P."
    assert (tcp.mss, tcp.sack_permitted, tcp.timestamps, tcp.wscale) == (1400, True, (7, 9), 10)
    assert tcp.sack_blocks == [(100, 200), (300, 400)]
    assert tcp.payload == b"hello" and tcp.checksum_ok()


def test_ipv6_extension_chain_round_trip() -> None:
    wire = stack(
        IPv6.build(src="::1", dst="::2"),
        HopByHop.build(data=b"\x01\x04\0\0\0\0"),  # PadN
        DestOptions.build(),
        Routing.build(data=b"\x00\x00" + bytes(4)),
        Fragment.build(ident=5),
        UDP.build(sport=1, dport=2),
        payload=b"z",
    )
    pkt = decode(wire, LINKTYPE_RAW)
    assert [type(layer) for layer in pkt.layers] == [IPv6, HopByHop, DestOptions, Routing, Fragment, UDP]
    assert [getattr(layer, "next_header", None) for layer in pkt.layers[:5]] == [0, 60, 43, 44, 17]
    assert pkt[Fragment].ident == 5 and pkt[UDP].checksum_ok() and pkt.payload == b"z"


def test_ah_is_skipped_by_its_length() -> None:
    icv = bytes(range(12))
    wire = stack(
        IPv4.build(src="10.0.0.1", dst="10.0.0.2"),
        AH.build(spi=9, icv=icv),
        ICMP.build(type=8),
        payload=bytes(12),
    )
    pkt = decode(wire, LINKTYPE_IPV4)
    assert [type(layer) for layer in pkt.layers] == [IPv4, AH, ICMP]
    ah = pkt[AH]
    assert (ah.payload_len, ah.header_len, ah.spi, ah.icv, ah.next_header) == (4, 24, 9, icv, 1)
    assert pkt[ICMP].type == 8 and pkt[ICMP].checksum_ok()


def test_icmp_and_icmpv6_checksums() -> None:
    ping = ICMP.build(type=8, ident=0x1234, seq=1).pack(b"abc")
    assert verify(ping) and ping[:2] == b"\x08\x00"
    six = stack(
        IPv6.build(src="fe80::1", dst="fe80::2"), ICMPv6.build(type=128, ident=1, seq=2), payload=b"x"
    )
    icmp6 = decode(six, LINKTYPE_IPV6)[ICMPv6]
    assert icmp6.checksum_ok() and (icmp6.ident, icmp6.seq) == (1, 2)
    with pytest.raises(ValueError, match="enclosing IP"):
        ICMPv6.build(type=128).pack(b"")


def test_udp_zero_checksum_is_sent_as_ffff() -> None:
    # Choose a payload that makes the computed checksum zero: it must go out as 0xFFFF.
    hdr = IPv4.build(src="0.0.0.0", dst="0.0.0.0", proto=17)
    for n in range(65536):
        seg = UDP.build(sport=n).pack(b"", lower=hdr)
        if seg[6:8] == b"\xff\xff":
            break
    else:
        pytest.fail("no sport gives a zero UDP checksum")
    assert decode(hdr.pack(seg), LINKTYPE_IPV4)[UDP].checksum_ok()


def test_ethernet_vlan_arp_types_are_bound() -> None:
    wire = stack(
        Ethernet.build(src="02:00:00:00:00:01"),
        Dot1Q.build(tci=5),
        ARP.build(op=2, sha="02:00:00:00:00:01", spa="10.0.0.1", tha="02:00:00:00:00:02", tpa="10.0.0.2"),
    )
    assert wire[12:14] == b"\x81\x00" and wire[16:18] == b"\x08\x06"
    pkt = decode(wire)
    assert pkt[Dot1Q].vlan == 5 and pkt[ARP].op == 2
    assert pkt.summary() == "ARP, Reply 10.0.0.1 is-at 02:00:00:00:00:01, length 28"


def test_decoded_header_can_be_edited_and_repacked() -> None:
    wire = stack(
        IPv4.build(src="10.0.0.1", dst="10.0.0.2", ttl=5, flags_frag=IP_MF), UDP.build(), payload=b""
    )
    ip = decode(wire, LINKTYPE_IPV4)[IPv4]
    ip.ttl = 4  # written before any field was read: the lazy parse must not undo it
    again = decode(ip.pack(ip.payload), LINKTYPE_IPV4)[IPv4]
    assert again.ttl == 4 and again.mf and again.checksum_ok()


def test_build_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="ttl_typo"):
        IPv4.build(ttl_typo=1)


def test_syn_constant_sets_flags() -> None:
    assert TCP.build(flags=SYN).off_flags == 5 << 12 | SYN
