"""Hand-written hex frames decoded field by field (checksums verified with an independent
word-by-word reference, and the IPv4 header one is the well-known Wikipedia example)."""

from __future__ import annotations

from sockscope.packets import (
    ARP,
    ICMP,
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    SLL,
    SLL2,
    TCP,
    UDP,
    Dot1Q,
    Ethernet,
    Fragment,
    IPv4,
    IPv6,
    decode,
)


def hexframe(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


SYN_FRAME = hexframe("""
    525400123456 5254 00abcdef 0800
    4500 003c 1c46 4000 4006 b1e6 ac10 0a63 ac10 0a0c
    cf3a 0050 3a4f1e2d 00000000 a002 faf0 8d32 0000
    020405b4 0402 080a 000a2b3c 00000000 01 030307
""")


def test_ethernet_ipv4_tcp_syn_with_options() -> None:
    pkt = decode(SYN_FRAME, LINKTYPE_ETHERNET)
    assert [type(layer) for layer in pkt.layers] == [Ethernet, IPv4, TCP]
    assert pkt.malformed is None and not pkt.truncated
    eth = pkt[Ethernet]
    assert eth.dst == bytes.fromhex("525400123456") and eth.type == 0x0800
    ip = pkt[IPv4]
    assert (ip.version, ip.ihl, ip.tos, ip.total_len, ip.ident) == (4, 5, 0, 60, 0x1C46)
    assert ip.df and not ip.mf and not ip.is_fragment and ip.ttl == 64 and ip.proto == 6
    assert (ip.src_ip, ip.dst_ip, ip.checksum) == ("172.16.10.99", "172.16.10.12", 0xB1E6)
    assert ip.checksum_ok() is True
    tcp = pkt[TCP]
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack, tcp.window) == (53050, 80, 0x3A4F1E2D, 0, 64240)
    assert tcp.header_len == 40 and tcp.flag_string == "S"
    assert tcp.mss == 1460 and tcp.sack_permitted and tcp.wscale == 7
    assert tcp.timestamps == (0x000A2B3C, 0)
    assert [opt.kind for opt in tcp.option_list] == [2, 4, 8, 1, 3]
    assert tcp.checksum_ok() is True
    assert pkt.payload == b""
    assert pkt.summary() == (
        "IP 172.16.10.99.53050 > 172.16.10.12.80: Flags [S], seq 978263597, win 64240, "
        "options [mss 1460,sackOK,TS val 666428 ecr 0,nop,wscale 7], length 0"
    )


def test_a_flipped_bit_fails_the_checksums() -> None:
    bad = bytearray(SYN_FRAME)
    bad[14 + 20 + 5] ^= 1  # a bit of the TCP sequence number
    assert decode(bytes(bad))[TCP].checksum_ok() is False
    bad[14 + 8] ^= 1  # the TTL
    assert decode(bytes(bad))[IPv4].checksum_ok() is False


IPV6_FRAGMENT = hexframe("""
    333300000001 020000000001 86dd
    6000 0000 0018 2c 40
    20010db8000000000000000000000001 20010db8000000000000000000000002
    11 00 0001 0000abcd
    9c40 0035 05dc 1234 6162636465666768
""")


def test_ipv6_first_fragment_is_truncated_not_malformed() -> None:
    pkt = decode(IPV6_FRAGMENT)
    assert [type(layer) for layer in pkt.layers] == [Ethernet, IPv6, Fragment, UDP]
    ip6 = pkt[IPv6]
    assert (ip6.version, ip6.payload_len, ip6.next_header, ip6.hop_limit) == (6, 24, 44, 64)
    assert (ip6.src_ip, ip6.dst_ip) == ("2001:db8::1", "2001:db8::2")
    frag = pkt[Fragment]
    assert (frag.next_header, frag.frag_offset, frag.mf, frag.ident) == (17, 0, True, 0xABCD)
    udp = pkt[UDP]
    assert (udp.sport, udp.dport, udp.length) == (40000, 53, 1500)
    assert udp.payload == b"abcdefgh"
    # The rest of the datagram is in later fragments: expected, so not a lie.
    assert pkt.malformed is None and pkt.truncated
    assert udp.checksum_ok() is None  # cannot be verified from one fragment


def test_ipv6_later_fragment_stops_at_the_fragment_header() -> None:
    later = bytearray(IPV6_FRAGMENT)
    later[14 + 40 + 2 : 14 + 40 + 4] = (1464 | 0).to_bytes(2, "big")  # offset 1464, M=0
    pkt = decode(bytes(later))
    assert [type(layer) for layer in pkt.layers] == [Ethernet, IPv6, Fragment]
    assert pkt[Fragment].frag_offset == 1464 and not pkt[Fragment].mf
    assert pkt.payload == IPV6_FRAGMENT[-16:] and pkt.malformed is None


VLAN_ARP = hexframe("""
    ffffffffffff 001122334455 8100 2064 0806
    0001 0800 06 04 0001 001122334455 c6336401 000000000000 c6336402
""") + bytes(18)


def test_vlan_tagged_arp_request_with_padding() -> None:
    pkt = decode(VLAN_ARP)
    assert [type(layer) for layer in pkt.layers] == [Ethernet, Dot1Q, ARP]
    tag = pkt[Dot1Q]
    assert (tag.vlan, tag.priority, tag.dei, tag.type) == (100, 1, False, 0x0806)
    arp = pkt[ARP]
    assert (arp.htype, arp.ptype, arp.hlen, arp.plen, arp.op) == (1, 0x0800, 6, 4, 1)
    assert (arp.sender_mac, arp.sender_ip, arp.target_ip) == (
        "00:11:22:33:44:55",
        "198.51.100.1",
        "198.51.100.2",
    )
    assert arp.tha == bytes(6)
    assert pkt.malformed is None  # the Ethernet padding past the ARP body is not a lie
    assert pkt.summary() == "ARP, Request who-has 198.51.100.2 tell 198.51.100.1, length 28"


TIME_EXCEEDED = hexframe("""
    020000000002 020000000001 0800
    45c0 0038 0007 0000 ff01 a5ff 0a0000fe 0a000001
    0b00 d5fc 00000000
    4500 003c 1234 0000 0111 7340 0a000001 c6336409
    9c40 829a 0028 0000
""")


def test_icmp_time_exceeded_quotes_the_udp_probe() -> None:
    pkt = decode(TIME_EXCEEDED)
    assert pkt.malformed is None and not pkt.truncated
    assert pkt[IPv4].checksum_ok() and pkt[IPv4].tos == 0xC0
    icmp = pkt[ICMP]
    assert (icmp.type, icmp.code, icmp.checksum, icmp.is_error) == (11, 0, 0xD5FC, True)
    assert icmp.checksum_ok() is True
    quoted = icmp.quoted
    assert isinstance(quoted, IPv4)
    assert (quoted.ttl, quoted.ident, quoted.dst_ip, quoted.total_len) == (1, 0x1234, "198.51.100.9", 60)
    assert quoted.checksum_ok() is True
    probe = quoted.next_layer
    assert isinstance(probe, UDP) and (probe.sport, probe.dport, probe.length) == (40000, 33434, 40)
    assert icmp.quoted_packet is not None
    assert icmp.quoted_packet.truncated and icmp.quoted_packet.malformed is None
    assert pkt.summary() == "IP 10.0.0.254 > 10.0.0.1: ICMP time exceeded in-transit, length 36"


def test_echo_request_is_not_quoting() -> None:
    reply = bytearray(TIME_EXCEEDED)
    reply[34] = 8
    assert decode(bytes(reply))[ICMP].quoted is None


LOOPBACK_UDP = hexframe("4500 0020 abcd 4000 4011 90fd 7f000001 7f000001 d431 0035 000c 4e9c") + b"ping"
SLL_FRAME = hexframe("0004 0304 0006 0000000000000000 0800") + LOOPBACK_UDP
SLL2_FRAME = hexframe("0800 0000 00000002 0001 00 06 5254001234560000") + LOOPBACK_UDP


def test_linux_cooked_sll() -> None:
    pkt = decode(SLL_FRAME, LINKTYPE_LINUX_SLL)
    assert [type(layer) for layer in pkt.layers] == [SLL, IPv4, UDP]
    sll = pkt[SLL]
    assert (sll.packet_type, sll.arphrd_type, sll.addr_len, sll.protocol) == (4, 772, 6, 0x0800)
    assert sll.link_address == bytes(6)
    assert pkt[IPv4].checksum_ok() and pkt[UDP].checksum_ok()
    assert pkt.payload == b"ping"
    assert pkt.summary() == "IP 127.0.0.1.54321 > 127.0.0.1.53: UDP, length 4"


def test_linux_cooked_sll2() -> None:
    pkt = decode(SLL2_FRAME, LINKTYPE_LINUX_SLL2)
    sll2 = pkt[SLL2]
    assert (sll2.protocol, sll2.if_index, sll2.arphrd_type, sll2.packet_type) == (0x0800, 2, 1, 0)
    assert sll2.link_address == bytes.fromhex("525400123456")
    assert pkt[UDP].dport == 53 and pkt.malformed is None
