"""tcpdump -n style one-line summaries, and the laziness the capture path relies on."""

from __future__ import annotations

from sockscope.packets import (
    ACK,
    FIN,
    ICMP,
    IP_MF,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_RAW,
    SYN,
    TCP,
    UDP,
    URG,
    Ethernet,
    ICMPv6,
    IPv4,
    IPv6,
    decode,
    stack,
)

V4 = {"src": "198.51.100.1", "dst": "198.51.100.2"}


def test_udp() -> None:
    wire = stack(Ethernet.build(), IPv4.build(**V4), UDP.build(sport=40000, dport=53), payload=bytes(12))
    assert (
        decode(wire, LINKTYPE_ETHERNET).summary() == "IP 198.51.100.1.40000 > 198.51.100.2.53: UDP, length 12"
    )


def test_tcp_syn_ack_over_ipv6() -> None:
    wire = stack(
        IPv6.build(src="::1", dst="::1"), TCP.build(sport=22, dport=50000, seq=1, ack=2, flags=SYN | ACK)
    )
    assert (
        decode(wire, LINKTYPE_RAW).summary()
        == "IP6 ::1.22 > ::1.50000: Flags [S.], seq 1, ack 2, win 65535, length 0"
    )


def test_tcp_with_data_and_unusual_flags() -> None:
    wire = stack(IPv4.build(**V4), TCP.build(seq=100, flags=FIN | URG, window=10, urgent=3), payload=b"abcd")
    assert decode(wire, LINKTYPE_IPV4).summary() == (
        "IP 198.51.100.1.0 > 198.51.100.2.0: Flags [FU], seq 100:104, win 10, urg 3, length 4"
    )
    bare = stack(IPv4.build(**V4), TCP.build())
    assert "Flags [none]" in decode(bare, LINKTYPE_IPV4).summary()


def test_icmp_echo_and_unreachable() -> None:
    ping = stack(
        IPv4.build(src="10.0.0.1", dst="10.0.0.2"), ICMP.build(type=8, ident=1, seq=1), payload=bytes(56)
    )
    assert (
        decode(ping, LINKTYPE_IPV4).summary()
        == "IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 1, seq 1, length 64"
    )
    probe = stack(
        IPv4.build(src="10.0.0.1", dst="10.0.0.9"), UDP.build(sport=4, dport=33434), payload=bytes(4)
    )
    port = stack(IPv4.build(src="10.0.0.9", dst="10.0.0.1"), ICMP.build(type=3, code=3), payload=probe[:28])
    assert decode(port, LINKTYPE_IPV4).summary() == (
        "IP 10.0.0.9 > 10.0.0.1: ICMP 10.0.0.9 udp port 33434 unreachable, length 36"
    )
    frag = stack(
        IPv4.build(src="10.0.0.9", dst="10.0.0.1"), ICMP.build(type=3, code=4, seq=1400), payload=probe[:28]
    )
    assert "ICMP 10.0.0.9 unreachable - need to frag (mtu 1400)" in decode(frag, LINKTYPE_IPV4).summary()


def test_icmpv6() -> None:
    echo = stack(
        IPv6.build(src="fe80::1", dst="fe80::2"), ICMPv6.build(type=129, ident=7, seq=3), payload=bytes(4)
    )
    assert (
        decode(echo, LINKTYPE_IPV6).summary()
        == "IP6 fe80::1 > fe80::2: ICMP6, echo reply, id 7, seq 3, length 12"
    )
    target = bytes.fromhex("fe800000000000000000000000000002")
    ns = stack(IPv6.build(src="fe80::1", dst="ff02::1:ff00:2"), ICMPv6.build(type=135), payload=target)
    assert "ICMP6, neighbor solicitation, who has fe80::2, length 24" in decode(ns, LINKTYPE_IPV6).summary()


def test_later_ipv4_fragment_and_unknown_protocol() -> None:
    later = stack(IPv4.build(**V4, proto=17, flags_frag=IP_MF | 185), payload=bytes(16))
    assert decode(later, LINKTYPE_IPV4).summary() == (
        "IP 198.51.100.1 > 198.51.100.2: ip-proto-17, fragment offset 1480, length 36"
    )
    gre = stack(IPv4.build(**V4, proto=47), payload=bytes(24))
    assert decode(gre, LINKTYPE_IPV4).summary() == "IP 198.51.100.1 > 198.51.100.2: ip-proto-47 24"


def test_truncated_and_malformed_markers() -> None:
    wire = stack(IPv4.build(**V4), UDP.build(sport=1, dport=2), payload=bytes(100))
    assert decode(wire[:40], LINKTYPE_IPV4, wirelen=len(wire)).summary().endswith(" [|udp]")
    assert (
        decode(wire[:40], LINKTYPE_IPV4).summary().endswith("[malformed: IPv4 claims 128 bytes, 40 present]")
    )


def test_unknown_ethertype() -> None:
    lldp = Ethernet.build(type=0x88CC).pack(bytes(46))
    assert decode(lldp).summary() == "ethertype 0x88cc, length 60"


def test_decode_is_lazy() -> None:
    wire = stack(IPv4.build(**V4, options=b"\x01" * 4), UDP.build(), payload=b"")
    pkt = decode(wire, LINKTYPE_IPV4)
    assert pkt._layers is None  # nothing decoded until asked
    ip = pkt[IPv4]
    # Walking the layers needs the fixed headers (one unpack each), not the variable parts.
    assert "ttl" in ip.__dict__ and "options" not in ip.__dict__
    assert ip.option_list == [(1, b"")] * 4 and "options" in ip.__dict__
    built = IPv4.build(**V4)
    assert (
        IPv4(built.pack(), 0, 20).__dict__.keys().isdisjoint({"ttl", "proto"})
    )  # a bare view parses nothing


def test_quoted_packet_is_decoded_on_demand() -> None:
    probe = stack(IPv4.build(**V4), UDP.build(), payload=b"")
    err = decode(stack(IPv4.build(**V4), ICMP.build(type=11), payload=probe), LINKTYPE_IPV4)
    assert err.summary() and "_quoted" not in err[ICMP].__dict__
    assert isinstance(err[ICMP].quoted, IPv4) and "_quoted" in err[ICMP].__dict__
