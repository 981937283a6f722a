"""Probe crafting and reply matching over bytes built here (no sockets, no root)."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from sockscope.errors import UsageError
from sockscope.packets import ACK, ICMP, LINKTYPE_RAW, RST, SYN, TCP, UDP, ICMPv6, IPv4, IPv6, decode, stack
from sockscope.probe import flows, rawio
from sockscope.probe.engine import OWN, Engine, Received
from sockscope.probe.matching import TraceMatcher, describe
from sockscope.probe.model import PingReply, PingResult
from sockscope.probe.mpls import mpls_labels
from sockscope.probe.ports import parse_ports

V4 = (socket.AF_INET, "192.0.2.1", "198.51.100.26")
V6 = (socket.AF_INET6, "2001:db8:1::1", "2001:db8:4::2")
ROUTER = {socket.AF_INET: "198.51.100.10", socket.AF_INET6: "2001:db8:2::2"}
TIME_EXCEEDED = {socket.AF_INET: 11, socket.AF_INET6: 3}
UNREACH = {socket.AF_INET: 3, socket.AF_INET6: 1}


def icmp_error(
    family: int,
    src: str,
    dst: str,
    kind: int,
    code: int,
    quoted: bytes,
    *,
    length: int = 0,
    extension: bytes = b"",
) -> Received:
    """An ICMP error from ``src`` to ``dst`` quoting ``quoted``, as a raw socket reads it."""
    if family == socket.AF_INET:
        ip: IPv4 | IPv6 = IPv4.build(src=src, dst=dst, ttl=63)
        icmp: ICMP | ICMPv6 = ICMP.build(type=kind, code=code, ident=length)
    else:
        ip = IPv6.build(src=src, dst=dst, hop_limit=63)
        icmp = ICMPv6.build(type=kind, code=code, ident=length << 8)
    wire = stack(ip, icmp, payload=quoted + extension)
    return Received(src, 1.0, 63, decode(wire, LINKTYPE_RAW))


@pytest.mark.parametrize("fam", [V4, V6], ids=["ipv4", "ipv6"])
def test_udp_probes_carry_their_number_in_the_checksum_and_keep_the_flow(fam: tuple[int, str, str]) -> None:
    family, src, dst = fam
    seen = set()
    for key in (1, 2, 3, 1000, 0xFFFE):
        wire = flows.udp_probe(flows.ip_header(family, src, dst, 5, key, 0, 77), 40000, 33434, key, 32)
        pkt = decode(wire, LINKTYPE_RAW)
        udp = pkt[UDP]
        assert udp.checksum == key and udp.checksum_ok()
        seen.add((udp.sport, udp.dport, len(wire)))
        if family == socket.AF_INET6:
            assert pkt[IPv6].flow_label == 77
    assert len(seen) == 1  # same ports, same size: one flow


@pytest.mark.parametrize("fam", [V4, V6], ids=["ipv4", "ipv6"])
def test_icmp_probes_vary_the_sequence_but_not_the_checksum(fam: tuple[int, str, str]) -> None:
    family, src, dst = fam
    heads = set()
    for seq in (1, 2, 500):
        wire = flows.icmp_probe(flows.ip_header(family, src, dst, 5, seq, 0, 1), 0x1234, seq, 0xBEEF, 20)
        pkt = decode(wire, LINKTYPE_RAW)
        icmp = pkt.get(ICMP) or pkt.get(ICMPv6)
        assert icmp is not None and icmp.seq == seq and icmp.checksum_ok() is not False
        heads.add(icmp.raw[:6])
        assert icmp.checksum == 0xBEEF
    assert len(heads) == 1  # type, code, checksum, identifier: what balancers hash


@pytest.mark.parametrize("fam", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("method", ["udp", "icmp", "tcp"])
def test_quoted_probes_are_matched_and_foreign_ones_are_not(fam: tuple[int, str, str], method: str) -> None:
    family, src, dst = fam
    m = TraceMatcher(family, dst, method, 40000, 33434 if method == "udp" else 80, 0x1234, 0x10000, 0)
    ip = flows.ip_header(family, src, dst, 1, 7, 0, 1)
    if method == "udp":
        probe = flows.udp_probe(ip, 40000, 33434, 7, 12)
        other = flows.udp_probe(flows.ip_header(family, src, dst, 1, 7, 0, 1), 40001, 33434, 7, 12)
    elif method == "icmp":
        probe = flows.icmp_probe(ip, 0x1234, 7, m.icmp_checksum, 12)
        other = flows.icmp_probe(flows.ip_header(family, src, dst, 1, 7, 0, 1), 0x4321, 7, 1, 12)
    else:
        probe = flows.tcp_syn(ip, 40000, 80, 0x10000 + 7)
        other = flows.tcp_syn(flows.ip_header(family, src, dst, 1, 7, 0, 1), 40000, 81, 0x10000 + 7)
    got = icmp_error(family, ROUTER[family], src, TIME_EXCEEDED[family], 0, probe)
    assert m(got) == 7
    assert describe(m, got) == (TIME_EXCEEDED[family], 0, None, [])
    assert m(icmp_error(family, ROUTER[family], src, TIME_EXCEEDED[family], 0, other)) is None
    # Only the first 8 bytes after the IP header quoted (RFC 792 routers): still ours.
    header = 20 if family == socket.AF_INET else 40
    assert m(icmp_error(family, ROUTER[family], src, TIME_EXCEEDED[family], 0, probe[: header + 8])) == 7
    # A quote cut inside the IP header is nobody's.
    assert m(icmp_error(family, ROUTER[family], src, TIME_EXCEEDED[family], 0, probe[:12])) is None


@pytest.mark.parametrize(
    ("family", "code", "mark"),
    [
        (socket.AF_INET, 0, "!N"),
        (socket.AF_INET, 1, "!H"),
        (socket.AF_INET, 2, "!P"),
        (socket.AF_INET, 13, "!X"),
        (socket.AF_INET, 7, "!<7>"),
        (socket.AF_INET6, 0, "!N"),
        (socket.AF_INET6, 1, "!X"),
        (socket.AF_INET6, 3, "!H"),
    ],
)
def test_unreachable_codes_become_traceroute_marks(family: int, code: int, mark: str) -> None:
    _, src, dst = V4 if family == socket.AF_INET else V6
    m = TraceMatcher(family, dst, "udp", 40000, 33434, 1, 0, 0)
    probe = flows.udp_probe(flows.ip_header(family, src, dst, 9, 3, 0, 1), 40000, 33434, 3, 12)
    got = icmp_error(family, ROUTER[family], src, UNREACH[family], code, probe)
    assert m(got) == 3 and m.is_final(got) and not m.reached(got)
    assert describe(m, got)[2] == mark


def test_port_unreachable_from_the_destination_is_arrival_not_a_mark() -> None:
    family, src, dst = V4
    m = TraceMatcher(family, dst, "udp", 40000, 33434, 1, 0, 0)
    probe = flows.udp_probe(flows.ip_header(family, src, dst, 4, 3, 0, 1), 40000, 33434, 3, 12)
    got = icmp_error(family, dst, src, 3, 3, probe)
    assert m.reached(got) and describe(m, got) == (3, 3, None, [])


def test_replies_from_the_destination() -> None:
    family, src, dst = V4
    m = TraceMatcher(family, dst, "icmp", 0, 0, 0x1234, 0, 0)
    reply = stack(IPv4.build(src=dst, dst=src), ICMP.build(type=0, ident=0x1234, seq=9), payload=b"x")
    assert m(Received(dst, 1.0, 60, decode(reply, LINKTYPE_RAW))) == 9
    ours_back = stack(IPv4.build(src=src, dst=dst), ICMP.build(type=8, ident=0x1234, seq=9))
    assert m(Received(src, 1.0, 60, decode(ours_back, LINKTYPE_RAW))) is OWN
    t = TraceMatcher(family, dst, "tcp", 40000, 80, 0, 0x10000, 0)
    for flags, note in ((SYN | ACK, "tcp SYN-ACK"), (RST | ACK, "tcp RST")):
        seg = stack(
            IPv4.build(src=dst, dst=src), TCP.build(sport=80, dport=40000, ack=0x10000 + 5, flags=flags)
        )
        got = Received(dst, 1.0, 60, decode(seg, LINKTYPE_RAW))
        assert t(got) == 4 and describe(t, got) == (None, None, None, [note])
    wrong_port = stack(IPv4.build(src=dst, dst=src), TCP.build(sport=81, dport=40000, ack=5, flags=RST))
    assert t(Received(dst, 1.0, 60, decode(wrong_port, LINKTYPE_RAW))) is None


def test_quote_notes_show_tos_ttl_and_mpls() -> None:
    family, src, dst = V4
    m = TraceMatcher(family, dst, "udp", 40000, 33434, 1, 0, 0)
    # What the router received: TOS rewritten to 0x20 and TTL 2 at arrival.
    probe = flows.udp_probe(flows.ip_header(family, src, dst, 2, 3, 0x20, 1), 40000, 33434, 3, 100)
    quote = probe[:128]  # RFC 4884: the quote padded to 128 bytes, length 32 words
    entry = (16004 << 12) | (0 << 9) | 0x100 | 1  # label 16004, exp 0, bottom of stack, TTL 1
    obj = struct.pack("!HBBI", 8, 1, 1, entry)
    extension = struct.pack("!BBH", 0x20, 0, 0) + obj
    got = icmp_error(family, ROUTER[family], src, 11, 0, quote, length=32, extension=extension)
    assert m(got) == 3
    assert mpls_labels(got.icmp) == [(16004, 0, True, 1)]  # type: ignore[arg-type]
    assert describe(m, got)[3] == ["TOS 0x00 arrived as 0x20", "quoted TTL 2", "MPLS label 16004 exp 0 ttl 1"]


def test_engine_counts_malformed_and_foreign_messages() -> None:
    async def go() -> tuple[int, int, list[object]]:
        engine = Engine(socket.AF_INET, lambda got: got.icmp.seq if got.icmp else None)  # type: ignore[union-attr]
        from sockscope.probe.engine import Probe

        probe = Probe(5)
        engine.pending[5] = probe
        good = stack(IPv4.build(src="192.0.2.2", dst="192.0.2.1"), ICMP.build(type=0, seq=5))
        bad_sum = stack(IPv4.build(src="192.0.2.2", dst="192.0.2.1"), ICMP.build(type=0, seq=5, checksum=1))
        short = stack(IPv4.build(src="192.0.2.2", dst="192.0.2.1", proto=1), payload=b"\x00")
        other = stack(IPv4.build(src="192.0.2.2", dst="192.0.2.1"), ICMP.build(type=0, seq=6))
        for wire in (bad_sum, short, other, good, good):
            engine._deliver(Received("192.0.2.2", 1.0, 64, decode(wire, LINKTYPE_RAW)))
        return engine.malformed, engine.ignored, [probe.reply is not None]

    malformed, ignored, answered = asyncio.run(go())
    # The second copy of the good reply answers nothing still pending: ignored.
    assert (malformed, ignored, answered) == (2, 2, [True])


def test_error_queue_entries_decode() -> None:
    ee = struct.pack("=IBBBBII", 113, rawio.SO_EE_ORIGIN_ICMP, 11, 0, 0, 0, 0)
    offender = struct.pack("<H", socket.AF_INET) + b"\0\0" + socket.inet_aton("198.51.100.2") + b"\0" * 8
    q = rawio.parse_queued_error(
        [(socket.IPPROTO_IP, rawio.IP_RECVERR, ee + offender)], ("198.51.100.26", 33434), b"\x00\x07@@"
    )
    assert q is not None
    assert (q.errno, q.icmp_type, q.offender, q.destination, q.payload) == (
        113,
        11,
        "198.51.100.2",
        ("198.51.100.26", 33434),
        b"\x00\x07@@",
    )
    assert rawio.parse_queued_error([(socket.IPPROTO_IP, rawio.IP_RECVERR, ee[:5])], ("x", 1), b"") is None
    assert rawio.ttl_from([(socket.IPPROTO_IP, rawio.IP_TTL_CMSG, struct.pack("=i", 61))]) == 61


def test_ping_statistics_as_iputils() -> None:
    result = PingResult("h", "192.0.2.1", 56, sent=4)
    result.replies = [PingReply(i, 64, rtt, "192.0.2.1", 64) for i, rtt in enumerate((1.0, 2.0, 3.0), 1)]
    mn, avg, mx, mdev = result.rtt_stats()  # type: ignore[misc]
    assert (mn, avg, mx) == (1.0, 2.0, 3.0) and mdev == pytest.approx(0.8165, abs=1e-4)
    d = result.to_dict()
    assert (d["sent"], d["received"], d["loss"]) == (4, 3, 0.25)
    assert d["rtt_ms"] == {"min": 1.0, "avg": 2.0, "max": 3.0, "mdev": 0.816}
    assert d["replies"][0] == {"seq": 1, "ttl": 64, "rtt_ms": 1.0, "from": "192.0.2.1", "bytes": 64}
    assert PingResult("h", "a", 56).to_dict()["rtt_ms"] is None
    result.duplicate_rtts = [5.0]  # iputils counts duplicates in its RTT figures, not in received
    assert result.rtt_stats()[:3] == (1.0, 2.75, 5.0)  # type: ignore[index]
    assert result.to_dict()["received"] == 3


def test_port_lists() -> None:
    assert parse_ports("22, 80,8000-8002,80") == [22, 80, 8000, 8001, 8002]
    assert parse_ports("-") == list(range(1, 65536)) == parse_ports("1-65535")
    assert parse_ports("65530-") == list(range(65530, 65536))
    for bad in ("", "x", "1,,2", "0", "65536", "5-3", "1-2-3", "80/tcp"):
        with pytest.raises(UsageError, match="bad port list"):
            parse_ports(bad)


class _Sent:
    """A send-only socket stand-in: what the prober sent, nothing on any wire."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, address: object) -> int:
        self.sent.append(data)
        return len(data)


def test_ping_counts_a_second_reply_as_a_duplicate_not_as_received() -> None:
    import time

    from sockscope.probe.engine import Probe
    from sockscope.probe.model import PingError
    from sockscope.probe.ping import _Options, _Pinger

    pinger = object.__new__(_Pinger)  # no sockets: replies are handed to the engine below
    pinger.family, pinger.address, pinger.ttl, pinger.payload = socket.AF_INET, "192.0.2.1", 64, b""
    pinger.engine, pinger.replied, pinger.duplicates = Engine(socket.AF_INET, pinger._match), {}, 0
    pinger.dest, pinger.ident, pinger.source, pinger.unprivileged = ("192.0.2.1", 0), 77, None, True
    pinger.sock = _Sent()  # type: ignore[assignment]
    result = PingResult("h", "192.0.2.1", 0)
    events: list[PingReply | PingError] = []
    options = _Options(
        dict(
            host="h", count=2, interval=0.05, timeout=5.0, deadline=None, size=0, ttl=64, tos=0,
            pattern=None, interface=None, pmtudisc=None, family=None, on_reply=events.append,
            on_start=None, on_send_error=None, on_send=None,
        )
    )  # fmt: skip
    steps = pinger.steps(result, options)

    def reply(seq: int, ident: int = 77) -> list[Probe]:
        wire = stack(
            IPv4.build(src="192.0.2.1", dst="192.0.2.9", ttl=61), ICMP.build(type=0, ident=ident, seq=seq)
        )
        pinger.engine._deliver(Received("192.0.2.1", time.monotonic(), 61, decode(wire, LINKTYPE_RAW)))
        return pinger.engine.poll(0)

    next(steps)  # request 1 goes out
    steps.send(reply(1))
    steps.send(reply(1))
    # Two more copies and another pinger's reply read before the prober sees any of them.
    for ident in (77, 77, 78):
        wire = stack(IPv4.build(src="192.0.2.1", dst="192.0.2.9"), ICMP.build(type=0, ident=ident, seq=1))
        pinger.engine._deliver(Received("192.0.2.1", time.monotonic(), 61, decode(wire, LINKTYPE_RAW)))
    steps.send(pinger.engine.poll(0))
    time.sleep(0.06)
    steps.send([])  # request 2 goes out
    with pytest.raises(StopIteration):
        steps.send(reply(2))
    assert len(pinger.sock.sent) == 2  # type: ignore[attr-defined]
    assert [(e.seq, isinstance(e, PingReply) and e.duplicate) for e in events] == [
        (1, False),
        (1, True),
        (1, True),
        (1, True),
        (2, False),
    ]
    d = result.to_dict()
    assert (d["sent"], d["received"], d["duplicates"], d["loss"]) == (2, 2, 3, 0)
    assert [r["seq"] for r in d["replies"]] == [1, 2]
    assert pinger.engine.ignored == 1  # another pinger's reply (ident 78)
    assert isinstance(pinger._echo_reply(2), tuple)  # one more copy of reply 2: a duplicate
    pinger._wrapped(2)  # sequence 2 used again after 65,535 requests: starts afresh
    assert pinger._echo_reply(2) is None  # (the new request 2 is not sent here)
