"""Divert without the kernel: the --rule language, payload repair, handler results and
how the engine groups verdicts into batch messages."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from sockscope.divert import DivertPacket, InvalidPayload, Verdict, apply_result, fix_packet, parse_rule
from sockscope.divert.engine import DivertStats, Engine
from sockscope.divert.firewall import _removal_script, queue_target
from sockscope.divert.session import queue_range
from sockscope.errors import SockscopeError, UsageError
from sockscope.netlink import nfqueue as nfq
from sockscope.netlink.codec import iter_messages
from sockscope.packets import ICMP, LINKTYPE_RAW, TCP, UDP, ICMPv6, IPv4, IPv6, decode, stack


def test_rule_udp_dport() -> None:
    rule = parse_rule("udp dport 5000")
    assert rule.families == (4, 6) and rule.hooks == ("input", "output")
    assert rule.variants(4) == [["-p", "udp", "-m", "udp", "--dport", "5000"]]


def test_rule_port_means_either_side_and_both_protocols() -> None:
    rule = parse_rule("port 53")
    assert rule.variants(4) == [
        ["-p", "tcp", "-m", "tcp", "--sport", "53"],
        ["-p", "tcp", "-m", "tcp", "--dport", "53"],
        ["-p", "udp", "-m", "udp", "--sport", "53"],
        ["-p", "udp", "-m", "udp", "--dport", "53"],
    ]
    assert parse_rule("tcp not port 22").variants(6) == [
        ["-p", "tcp", "-m", "tcp", "!", "--sport", "22", "!", "--dport", "22"]
    ]


def test_rule_addresses_pick_the_family() -> None:
    rule = parse_rule("tcp saddr 2001:db8::/32 and dport 80-90 forward")
    assert rule.families == (6,) and rule.hooks == ("forward",)
    assert rule.variants(6) == [["-p", "tcp", "-m", "tcp", "-s", "2001:db8::/32", "--dport", "80:90"]]
    assert parse_rule("icmp").families == (4,)
    assert parse_rule("daddr != 198.51.100.7 mark 0x10/0xff").variants(4) == [
        ["!", "-d", "198.51.100.7/32", "-m", "mark", "--mark", "0x10/0xff"]
    ]


def test_rule_interfaces_choose_hooks() -> None:
    assert parse_rule("iif eth0").hooks == ("input",)
    assert parse_rule("oif eth0 udp").hooks == ("output",)
    assert parse_rule("iif eth0 oif eth1 forward").variants(4) == [["-i", "eth0", "-o", "eth1"]]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "udp dport",
        "udp dport 70000",
        "udp dport http",
        "tcp udp",
        "frobnicate",
        "saddr 10.0.0.300",
        "ip6 saddr 198.51.100.1",
        "icmp saddr 2001:db8::1",
        "iif eth0 output",
        "iif eth0 oif eth1",
        "port 1 port 2",
        "dport 1 dport 2",
        "not udp",
        "udp not",
        "iif bad/name",
        "mark 1/2/3",
    ],
)
def test_bad_rules_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="--rule"):
        parse_rule(text)


def test_queue_target_and_range() -> None:
    assert queue_target([3], bypass=True) == ["-j", "NFQUEUE", "--queue-num", "3", "--queue-bypass"]
    assert queue_target([0, 1, 2], bypass=False) == [
        "-j",
        "NFQUEUE",
        "--queue-balance",
        "0:2",
        "--queue-cpu-fanout",
    ]
    assert queue_range(5) == [5]
    assert queue_range(0, "2:4") == [2, 3, 4]
    for bad in ("4:2", "x", "1:70000"):
        with pytest.raises(UsageError):
            queue_range(0, bad)


def test_removal_script_undoes_exactly_the_jumps_and_chains() -> None:
    script = _removal_script("sockscope divert pid=1 start=2", [("INPUT", "SOCKSCOPE-DIVERT-0-IN")])
    assert script.splitlines() == [
        "*filter",
        '-D INPUT -m comment --comment "sockscope divert pid=1 start=2" -j SOCKSCOPE-DIVERT-0-IN',
        "-F SOCKSCOPE-DIVERT-0-IN",
        "-X SOCKSCOPE-DIVERT-0-IN",
        "COMMIT",
    ]


def udp4(data: bytes = b"abc") -> bytes:
    return stack(
        IPv4.build(src="198.51.100.1", dst="198.51.100.2"), UDP.build(sport=1, dport=2), payload=data
    )


def test_fix_packet_recomputes_lengths_and_checksums() -> None:
    wire = bytearray(udp4())
    wire[-3:] = b"xyz"  # payload changed, checksum now stale
    fixed = fix_packet(bytes(wire) + b"more")  # and longer: lengths too
    pkt = decode(fixed, LINKTYPE_RAW)
    assert not pkt.malformed
    assert pkt[IPv4].total_len == len(fixed) and pkt[IPv4].checksum_ok()
    assert pkt[UDP].length == 8 + 7 and pkt[UDP].checksum_ok() is True and pkt.payload == b"xyzmore"
    tcp6 = stack(IPv6.build(src="2001:db8::1", dst="2001:db8::2"), TCP.build(sport=1, dport=80), payload=b"x")
    broken = bytearray(tcp6)
    broken[40:42] = b"\x12\x34"  # sport
    assert decode(fix_packet(bytes(broken)), LINKTYPE_RAW)[TCP].checksum_ok() is True
    icmp = bytearray(
        stack(IPv4.build(src="198.51.100.1", dst="198.51.100.2"), ICMP.build(type=8), payload=b"p")
    )
    icmp[-1:] = b"q"
    out = decode(fix_packet(bytes(icmp)), LINKTYPE_RAW)
    assert out[ICMP].checksum_ok() and out.payload == b"q"
    icmp6 = bytearray(
        stack(IPv6.build(src="2001:db8::1", dst="2001:db8::2"), ICMPv6.build(type=128), payload=b"p")
    )
    icmp6[-1:] = b"q"
    assert decode(fix_packet(bytes(icmp6)), LINKTYPE_RAW)[ICMPv6].checksum_ok() is True


@pytest.mark.parametrize("bad", [b"", b"hello", b"\x55" * 40, bytes(udp4())[:22]])
def test_fix_packet_rejects_non_ip(bad: bytes) -> None:
    with pytest.raises(InvalidPayload):
        fix_packet(bad)


# A real queued packet (tests/unit/data/nfqueue): what the packet's lazy fields parse.
RECORDED = (Path(__file__).parent / "data" / "nfqueue" / "packet4.bin").read_bytes()
CUT = (Path(__file__).parent / "data" / "nfqueue" / "capped.bin").read_bytes()


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


def fake_engine() -> tuple[Engine, FakeSocket]:
    # The engine's verdict logic without a kernel: only the attributes flush uses.
    engine = Engine.__new__(Engine)
    sock = FakeSocket()
    engine.__dict__.update(
        queues=[7],
        default=Verdict.ACCEPT,
        timeout=1.0,
        batch=64,
        stats=DivertStats(),
        lock=threading.Lock(),
        _pending=[],
        _sock=sock,
    )
    return engine, sock


def add(engine: Engine, packet_id: int, received: float = 0.0) -> DivertPacket:
    pkt = DivertPacket(7, packet_id, RECORDED, received)
    engine._pending.append(pkt)
    return pkt


def sent_verdicts(sock: FakeSocket) -> list[tuple[int, int, int, int | None, bool]]:
    out = []
    for data in sock.sent:
        for msg in iter_messages(data):
            _queue, verdict, packet_id, mark, payload = nfq.parse_verdict(msg.payload)
            out.append((msg.type & 0xFF, verdict, packet_id, mark, payload is not None))
    return out


def test_flush_batches_runs_and_sends_changes_alone() -> None:
    engine, sock = fake_engine()
    pkts = [add(engine, i) for i in range(1, 8)]
    for p in pkts[:3]:
        p.accept()
    pkts[3].drop()
    pkts[4].mark = 9
    pkts[4].accept()
    pkts[5].set_payload(udp4(b"new"))
    pkts[5].accept()
    # pkts[6] undecided: stays pending
    assert engine.flush() == 6
    B, V = nfq.NFQNL_MSG_VERDICT_BATCH, nfq.NFQNL_MSG_VERDICT
    assert sent_verdicts(sock) == [
        (B, nfq.NF_ACCEPT, 3, None, False),
        (B, nfq.NF_DROP, 4, None, False),
        (B, nfq.NF_ACCEPT, 5, 9, False),
        (V, nfq.NF_ACCEPT, 6, None, True),
    ]
    assert len(sock.sent) == 1  # one send for the whole flush
    assert engine.pending == 1
    s = engine.stats
    assert (s.accepted, s.dropped, s.modified) == (5, 1, 1)


def test_packets_after_an_undecided_one_get_single_verdicts() -> None:
    engine, sock = fake_engine()
    held, later = add(engine, 1), add(engine, 2)
    later.accept()
    engine.flush()
    assert sent_verdicts(sock) == [(nfq.NFQNL_MSG_VERDICT, nfq.NF_ACCEPT, 2, None, False)]
    assert engine.pending == 1 and held.verdict is None


def test_expire_gives_the_default_verdict_to_old_packets_only() -> None:
    engine, sock = fake_engine()
    engine.default = Verdict.DROP
    add(engine, 1, received=0.0)
    young = add(engine, 2, received=10.0)
    assert engine.expire(now=10.5) == 1
    assert sent_verdicts(sock) == [(nfq.NFQNL_MSG_VERDICT_BATCH, nfq.NF_DROP, 1, None, False)]
    assert young.verdict is None and engine.stats.expired == 1
    assert engine.expire(everything=True) == 1


def test_a_verdict_is_given_once() -> None:
    engine, _ = fake_engine()
    pkt = add(engine, 1)
    pkt.accept()
    with pytest.raises(SockscopeError, match="already"):
        pkt.drop()
    with pytest.raises(ValueError):
        pkt.mark = -1


@pytest.mark.parametrize(
    ("result", "verdict"),
    [("drop", Verdict.DROP), (Verdict.REPEAT, Verdict.REPEAT), ("ACCEPT", Verdict.ACCEPT), (None, None)],
)
def test_handler_results(result: Any, verdict: Verdict | None) -> None:
    engine, _ = fake_engine()
    pkt = add(engine, 1)
    apply_result(pkt, result)
    assert pkt.verdict is verdict


def test_handler_bytes_result_is_a_new_payload() -> None:
    engine, _ = fake_engine()
    pkt = add(engine, 1)
    apply_result(pkt, udp4(b"zzz"))
    assert pkt.verdict is Verdict.ACCEPT and pkt.payload.endswith(b"zzz")
    for bad in ("maybe", 42):
        with pytest.raises(UsageError):
            apply_result(add(engine, 2 + len(str(bad))), bad)


def test_recorded_packet_decodes_lazily() -> None:
    engine, _ = fake_engine()
    pkt = add(engine, 1)
    assert pkt.hook == "output" and pkt.mark == 0x2A and pkt[UDP].dport == 5000
    assert "127.0.0.1" in pkt.summary()
    pkt.mark = 1
    assert pkt.mark == 1 and pkt.info.mark == 0x2A


def test_a_packet_cut_at_the_copy_range_cannot_be_replaced() -> None:
    pkt = DivertPacket(7, 1, CUT, 0.0)
    with pytest.raises(InvalidPayload, match="copy range"):
        pkt.set_payload(udp4())


def test_nft_rendering() -> None:
    from sockscope.divert.nftables import queue_statement, render

    assert queue_statement([3], bypass=True) == "queue num 3 bypass"
    assert queue_statement([0, 1, 2, 3], bypass=False) == "queue num 0-3 fanout"
    rule = parse_rule("port 53 iif eth0 mark 0x10/0xff")
    assert render(rule, "t", "queue num 0").splitlines() == [
        "table inet t {",
        "  chain input {",
        "    type filter hook input priority 0; policy accept;",
        *(
            f"    meta nfproto {fam} meta l4proto {proto} "
            f'iifname "eth0" meta mark and 0xff == 0x10 th {side} 53 queue num 0'
            for fam in ("ipv4", "ipv6")
            for proto in ("tcp", "udp")
            for side in ("sport", "dport")
        ),
        "  }",
        "}",
    ]
    assert parse_rule("ip6 not host 2001:db8::1 forward").nft_matches(6) == [
        "meta nfproto ipv6 ip6 saddr != 2001:db8::1/128 ip6 daddr != 2001:db8::1/128"
    ]
