"""Divert without the kernel: compiling --rule, the old language's translation, payload
repair and rewrites, handler results, and how the engine groups verdicts into batch
messages and reports settled packets."""

from __future__ import annotations

import shlex
import threading
from pathlib import Path
from typing import Any

import pytest

from sockscope.capture.bpf import compile_filter
from sockscope.divert import DivertPacket, InvalidPayload, Verdict, apply_result, compile_rule, fix_packet
from sockscope.divert.engine import DivertStats, Engine
from sockscope.divert.legacy import suggest
from sockscope.divert.rule import KERNEL_LIMIT, Interface, Mark
from sockscope.errors import SockscopeError, UsageError
from sockscope.netlink import nfqueue as nfq
from sockscope.netlink.codec import iter_messages
from sockscope.packets import ICMP, LINKTYPE_RAW, TCP, UDP, ICMPv6, IPv4, IPv6, decode, stack


def test_rule_compiles_per_family_for_the_kernel() -> None:
    rule = compile_rule("udp and dst port 5000")
    assert rule.families == (4, 6) and rule.hooks == ("input", "output")
    four, six = rule.programs[4], rule.programs[6]
    assert four is not None and six is not None and rule.user_filter is None and rule.notes == []
    v4 = bytes(udp4(b"x"))
    v4 = v4[:22] + (5000).to_bytes(2, "big") + v4[24:]
    assert four.matches(v4) and not six.matches(v4)
    # Each family's program is shorter than the whole filter's.
    whole = compile_filter("udp and dst port 5000", LINKTYPE_RAW)
    assert len(four) < len(whole) and len(six) < len(whole)


def test_rule_for_one_family_and_for_everything() -> None:
    assert compile_rule("ip6 and tcp").families == (6,)
    assert compile_rule("tcp[13] & 2 != 0").families == (4,)  # tcp[] is IPv4 only in libpcap
    every = compile_rule("")
    assert every.programs == {4: None, 6: None} and every.user_filter is None and every.notes == []


def test_a_filter_too_long_for_the_kernel_is_matched_in_user_space_and_said() -> None:
    text = " or ".join(f"(udp dst port {5000 + i} and len = {100 + i})" for i in range(20))
    rule = compile_rule(text, ["forward"])
    assert rule.programs == {4: None, 6: None} and rule.user_filter is not None
    assert rule.lengths[4] > KERNEL_LIMIT and rule.lengths[6] > KERNEL_LIMIT
    [note] = rule.notes
    assert "at most 64" in note and "every IPv4/IPv6 packet on hook forward is diverted" in note
    assert "filter runs in user space" in note


def test_hooks_interfaces_and_marks() -> None:
    assert compile_rule("udp", in_interface="eth0").hooks == ("input",)
    assert compile_rule("udp", out_interface="eth0").hooks == ("output",)
    both = compile_rule("udp", ["forward", "forward"], in_interface="!veth+", out_interface="eth1")
    assert both.hooks == ("forward",)
    assert both.in_interface == Interface("veth+", negate=True)
    assert both.scope == "hook forward in !veth+ out eth1"
    assert compile_rule("udp", mark="0x10/0xff").mark == Mark(0x10, 0xFF)
    assert compile_rule("udp", mark="!1").mark == Mark(1, 0xFFFFFFFF, negate=True)
    assert compile_rule("udp", mark=7).mark == Mark(7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"text": "udp and"}, "--rule 'udp and': can't parse filter expression: syntax error"),
        ({"text": "arp"}, "--rule 'arp': expression rejects all packets"),
        ({"text": "udp", "hooks": ["prerouting"]}, "bad --hook"),
        ({"text": "udp", "hooks": ["output"], "in_interface": "eth0"}, "-i (input interface) does not apply"),
        (
            {"text": "udp", "hooks": ["input"], "out_interface": "eth0"},
            "-o (output interface) does not apply",
        ),
        ({"text": "udp", "in_interface": "eth0", "out_interface": "eth1"}, "add --hook forward"),
        ({"text": "udp", "in_interface": "a/b"}, "bad -i 'a/b'"),
        ({"text": "udp", "in_interface": "waytoolonginterface"}, "bad -i"),
        ({"text": "udp", "mark": "1/2/3"}, "bad --mark"),
        ({"text": "udp", "mark": "0x100000000"}, "bad --mark"),
    ],
)
def test_bad_rules_are_usage_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        compile_rule(**kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("udp dport 5000", "--rule 'udp and dst port 5000'"),
        ("udp dport 5010-5000 forward", "--rule 'udp and dst portrange 5010-5000' --hook forward"),
        ("tcp port 80 forward", "--rule 'tcp and port 80' --hook forward"),
        ("port 53 iif eth0", "--rule '(tcp or udp) and port 53' -i eth0"),
        (
            "ip6 saddr 2001:db8::/32 not dport 22",
            "--rule 'ip6 and (tcp or udp) and src net 2001:db8::/32 and not dst port 22'",
        ),
        (
            "daddr != 198.51.100.7 mark 0x10/0xff",
            "--rule 'ip and not dst host 198.51.100.7' --mark 0x10/0xff",
        ),
        ("udp dport 5000 mark != 1", "--rule 'udp and dst port 5000' --mark '!0x1'"),
        ("udplite output", "--rule '(ip proto 136 or ip6 proto 136)' --hook output"),
        ("icmp6 oif eth1 forward", "--rule icmp6 -o eth1 --hook forward"),
    ],
)
def test_the_old_rule_language_gets_its_translation(old: str, new: str) -> None:
    with pytest.raises(UsageError) as info:
        compile_rule(old)
    message = str(info.value)
    assert "divert's old rule language" in message and message.endswith("write " + new), message
    # The suggestion is itself valid: the filter compiles.
    compile_rule(shlex.split(new)[1])


def test_text_without_old_words_is_a_tcpdump_filter() -> None:
    assert suggest("udp port 53") is None and suggest("udp and") is None
    assert compile_rule("udp port 53").programs[4] is not None


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
        user_filter=None,
        on_settled=None,
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


def queued(payload: bytes, packet_id: int = 1) -> DivertPacket:
    """A DivertPacket around ``payload`` as if the kernel had queued it."""
    pkt = DivertPacket(7, packet_id, b"", 0.0)
    pkt._info = nfq.QueuedPacket(queue=7, packet_id=packet_id, hw_protocol=0x0800, hook=1, payload=payload)
    return pkt


def tcp4(data: bytes = b"", flags: int = 0x18) -> bytes:
    return stack(
        IPv4.build(src="198.51.100.1", dst="198.51.100.2"),
        TCP.build(sport=40000, dport=80, seq=1000, ack=2000, flags=flags),
        payload=data,
    )


def test_set_transport_payload_changes_only_the_data() -> None:
    before = udp4(b"a UDP payload with an a")
    pkt = queued(before)
    pkt.set_transport_payload(pkt[UDP].payload.replace(b"a", b"bb"))
    after = decode(pkt.payload, LINKTYPE_RAW)
    assert after.payload == b"bb UDP pbbylobbd with bbn bb"
    assert (after[UDP].sport, after[UDP].dport) == (1, 2)  # header bytes that look like "a" stay
    assert after[UDP].checksum_ok() is True and after[IPv4].checksum_ok()
    assert after[UDP].length == 8 + len(after.payload) and after[IPv4].total_len == len(pkt.payload)
    assert pkt.verdict is None  # still to be given


def test_tcp_data_is_replaced_only_with_as_many_bytes() -> None:
    pkt = queued(tcp4(b"abc"))
    pkt.set_transport_payload(b"XYZ")
    assert decode(pkt.payload, LINKTYPE_RAW).payload == b"XYZ"
    assert decode(pkt.payload, LINKTYPE_RAW)[TCP].checksum_ok() is True
    with pytest.raises(InvalidPayload, match="sequence numbers"):
        queued(tcp4(b"abc")).set_transport_payload(b"XYZXYZ")
    with pytest.raises(InvalidPayload, match="without data"):
        queued(tcp4(b"", flags=0x02)).set_transport_payload(b"XYZ")
    icmp = stack(IPv4.build(src="198.51.100.1", dst="198.51.100.2"), ICMP.build(type=8), payload=b"p")
    with pytest.raises(InvalidPayload, match="no TCP or UDP"):
        queued(icmp).set_transport_payload(b"x")


def test_rewrite_payload_touches_data_segments_only() -> None:
    from sockscope.divert.rewrite import parse_rewrites, rewrite

    changes = parse_rewrites(["payload=XYZ", "dport=8080"])
    syn = queued(tcp4(b"", flags=0x02))
    rewrite(syn, changes)
    assert decode(syn.payload, LINKTYPE_RAW)[TCP].dport == 8080 and syn[TCP].payload == b""
    data = queued(tcp4(b"abc"))
    rewrite(data, changes)
    assert decode(data.payload, LINKTYPE_RAW).payload == b"XYZ"
    with pytest.raises(InvalidPayload, match="cannot become 3"):
        rewrite(queued(tcp4(b"abcdef")), changes)  # refused: the packet stays as it was
    udp = queued(udp4(b"abcdef"))
    rewrite(udp, changes)
    assert decode(udp.payload, LINKTYPE_RAW).payload == b"XYZ"  # UDP: any length


def test_rewrite_payload_takes_the_bytes_the_shell_passed() -> None:
    import os

    from sockscope.divert.rewrite import parse_rewrites

    raw = os.fsdecode(b"\xff\xfeok")  # how Python hands over argv bytes that are not UTF-8
    assert parse_rewrites([f"payload={raw}"])["payload"] == b"\xff\xfeok"


def test_settled_packets_are_reported_once_default_verdicts_included() -> None:
    engine, _ = fake_engine()
    seen: list[tuple[int, Verdict | None]] = []
    engine.on_settled = lambda pkt: seen.append((pkt.id, pkt.verdict))
    first, held = add(engine, 1, received=0.0), add(engine, 2, received=0.0)
    first.drop()
    engine.flush()
    assert seen == [(1, Verdict.DROP)]
    engine.expire(now=5.0)  # the held one times out: reported with its default verdict
    assert seen == [(1, Verdict.DROP), (2, Verdict.ACCEPT)] and held.verdict is Verdict.ACCEPT
    engine.flush()
    assert len(seen) == 2


def test_the_user_space_filter_passes_unmatched_packets_unseen() -> None:
    engine, sock = fake_engine()
    engine.user_filter = compile_filter("udp dst port 6000", LINKTYPE_RAW)  # the recorded one is 5000
    seen: list[DivertPacket] = []
    engine.on_settled = seen.append
    pkt = add(engine, 1)
    assert engine._apply_user_filter([pkt]) == [] and pkt.verdict is Verdict.ACCEPT
    engine.flush()
    assert seen == [] and sent_verdicts(sock) == [
        (nfq.NFQNL_MSG_VERDICT_BATCH, nfq.NF_ACCEPT, 1, None, False)
    ]
    assert (engine.stats.unmatched, engine.stats.accepted) == (1, 0)


def test_stats_inside_the_with_block_count_the_last_verdicts() -> None:
    from sockscope.divert import Divert

    engine, _ = fake_engine()
    session = Divert(None)
    session.engine = engine
    add(engine, 1).accept()
    add(engine, 2).drop()
    stats = session.stats()
    assert (stats.accepted, stats.dropped) == (1, 1)


def test_interrupt_ends_a_running_handler_with_the_default_verdict() -> None:
    from sockscope.divert import Divert

    engine, _ = fake_engine()
    engine.default = Verdict.DROP
    session = Divert(None)
    session.engine = engine
    pkt = add(engine, 1)

    def stuck(p: DivertPacket) -> None:
        session.interrupt()  # as a signal handler would, while the handler runs
        raise AssertionError("not reached")

    session.handle(pkt, stuck)
    assert pkt.verdict is Verdict.DROP and session._stop.is_set()
    assert engine.stats.handler_errors == 0
    session.interrupt()  # outside a handler: only stops


def test_queue_range() -> None:
    from sockscope.divert.session import queue_range

    assert queue_range(5) == [5]
    assert queue_range(0, "2:4") == [2, 3, 4]
    for bad in ("4:2", "x", "1:70000"):
        with pytest.raises(UsageError):
            queue_range(0, bad)


def test_a_port_range_written_high_to_low_still_matches() -> None:
    # The old language installed "dport 5010-5000" as a rule that never matched;
    # libpcap orders the range.
    program = compile_rule("udp and dst portrange 5010-5000").programs[4]
    assert program is not None
    wire = bytearray(udp4(b"x"))
    wire[22:24] = (5005).to_bytes(2, "big")
    assert program.matches(bytes(wire))
