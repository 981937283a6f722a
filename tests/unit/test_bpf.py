"""compile_filter must produce exactly tcpdump's programs and errors; matches runs them."""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess

import pytest

from sockscope.capture import bpf
from sockscope.capture.bpf import BpfProgram, compile_filter, reject_all
from sockscope.errors import SockscopeError, UsageError
from sockscope.packets import SLL, TCP, UDP, Ethernet, IPv4, IPv6, stack

# (linktype number, the name tcpdump's -y takes for it)
LINKTYPES = [(1, "EN10MB"), (113, "LINUX_SLL"), (101, "RAW")]
EXPRESSIONS = ["udp port 53", "tcp and dst host 192.0.2.1", "icmp or ip6", "len > 100", "udp[8:2] = 0x1234"]


def tcpdump_program(expression: str, dltname: str) -> tuple[tuple[int, int, int, int], ...]:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump not installed")
    out = subprocess.run(
        [tcpdump, "-ddd", "-y", dltname, expression], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    count = int(out[0])  # -ddd prints the instruction count first, then "code jt jf k" lines
    rows = [tuple(int(v) for v in line.split()) for line in out[1 : count + 1]]
    assert all(len(r) == 4 for r in rows)
    return tuple((r[0], r[1], r[2], r[3]) for r in rows)


@pytest.mark.parametrize(("linktype", "dltname"), LINKTYPES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_instructions_equal_tcpdump(expression: str, linktype: int, dltname: str) -> None:
    assert compile_filter(expression, linktype).instructions == tcpdump_program(expression, dltname)


def test_vlan_equals_tcpdump_on_ethernet() -> None:
    # Only Ethernet has VLAN support; other links are refused (tested below).
    assert compile_filter("vlan and udp").instructions == tcpdump_program("vlan and udp", "EN10MB")


def test_linktypes_give_different_programs() -> None:
    # Guards the comparison above: a linktype ignored would still match for EN10MB only.
    programs = {compile_filter("udp", lt).instructions for lt, _ in LINKTYPES}
    assert len(programs) == 3


def test_unoptimized_differs_and_is_longer() -> None:
    assert len(compile_filter("udp port 53", optimize=False)) > len(compile_filter("udp port 53"))


def test_dump_matches_tcpdump_d() -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump not installed")
    for expression in ("udp port 53", "tcp[13] & 2 != 0"):
        expected = subprocess.run(
            [tcpdump, "-d", "-y", "EN10MB", expression], capture_output=True, text=True, check=True
        ).stdout
        assert compile_filter(expression).dump() == expected.rstrip("\n")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("udp port 5x", "unknown port '5x'"),
        ("foo bar", "can't parse filter expression: syntax error"),
        ("tcp[", "can't parse filter expression: syntax error"),
    ],
)
def test_bad_expression_gives_libpcaps_message(expression: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        compile_filter(expression)
    assert str(info.value) == message
    assert info.value.exit_status == 2


def test_error_message_agrees_with_tcpdump() -> None:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump not installed")
    res = subprocess.run([tcpdump, "-d", "-y", "EN10MB", "udp port 5x"], capture_output=True, text=True)
    with pytest.raises(UsageError) as info:
        compile_filter("udp port 5x")
    assert res.stderr.strip() == f"tcpdump: {info.value}"


def test_linktype_restriction_is_reported() -> None:
    with pytest.raises(UsageError) as info:
        compile_filter("vlan", 101)
    assert str(info.value) == "no VLAN support for Raw IP"


def test_non_ascii_expression_is_usage_error() -> None:
    with pytest.raises(UsageError):
        compile_filter("host caf\u00e9")


def udp_frame(dport: int) -> bytes:
    return stack(
        Ethernet.build(),
        IPv4.build(src="192.0.2.1", dst="192.0.2.2"),
        UDP.build(sport=40000, dport=dport),
        payload=b"q" * 20,
    )


def tcp_frame(dport: int) -> bytes:
    return stack(
        Ethernet.build(), IPv4.build(src="192.0.2.1", dst="192.0.2.2"), TCP.build(sport=40000, dport=dport)
    )


def test_matches_udp_port() -> None:
    prog = compile_filter("udp port 53")
    assert prog.matches(udp_frame(53))
    assert not prog.matches(udp_frame(54))
    assert not prog.matches(tcp_frame(53))


def test_matches_ipv6_and_cooked_links() -> None:
    v6 = stack(Ethernet.build(), IPv6.build(src="2001:db8::1", dst="2001:db8::2"), UDP.build(dport=53))
    assert compile_filter("udp port 53").matches(v6)
    sll = stack(SLL.build(), IPv4.build(src="192.0.2.1", dst="192.0.2.2"), UDP.build(dport=53))
    assert compile_filter("udp port 53", 113).matches(sll)
    assert not compile_filter("udp port 53").matches(sll)  # read as Ethernet it is garbage


def test_truncated_frame_and_wirelen() -> None:
    frame = udp_frame(53)
    prog = compile_filter("len > 1000")
    assert not prog.matches(frame)
    assert prog.matches(frame, wirelen=1500)  # `len` is the length on the wire
    # A load past the captured bytes rejects rather than reading beyond the buffer.
    assert not compile_filter("udp port 53").matches(frame[:30], wirelen=len(frame))


def test_empty_expression_accepts_all() -> None:
    prog = compile_filter("")
    assert prog.instructions == ((0x06, 0, 0, 262144),)
    assert prog.matches(udp_frame(1)) and prog.matches(b"") and prog.matches(tcp_frame(2))


def test_reject_all() -> None:
    prog = reject_all()
    assert len(prog) == 1 and prog.dump() == "(000) ret      #0"
    assert not prog.matches(udp_frame(53))


def test_program_from_tuples_and_validation() -> None:
    prog = BpfProgram(compile_filter("tcp").instructions)
    assert prog == compile_filter("tcp") and prog.matches(tcp_frame(80)) and not prog.matches(udp_frame(80))
    with pytest.raises(ValueError):
        BpfProgram(())
    with pytest.raises(ValueError):
        BpfProgram(((6, 0, 0, 0),) * 0x10000)


def test_missing_libpcap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bpf, "_lib", None)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(bpf, "_SONAMES", ("libpcap-does-not-exist.so.9",))
    with pytest.raises(SockscopeError) as info:
        compile_filter("udp")
    assert str(info.value) == "libpcap not found: install libpcap0.8"


# -- programs rewritten for the kernel: cooked sockets and direction -----------------

from sockscope.capture.bpf import accept_all, for_cooked_socket, with_direction  # noqa: E402


def test_cooked_program_moves_loads_back_by_the_sll_header() -> None:
    sll = compile_filter("udp port 53", 113, snaplen=1000)
    cooked = for_cooked_socket(sll)
    assert cooked is not None and len(cooked) == len(sll)
    for (code, _jt, _jf, k), (code2, _jt2, _jf2, k2) in zip(
        sll.instructions, cooked.instructions, strict=True
    ):
        assert code == code2
        if code & 0x07 in (0, 1) and code & 0xE0 in (0x20, 0x40, 0xA0):  # packet loads
            if k == 14:
                assert k2 == 0xFFFFF000  # SKF_AD_PROTOCOL: the SLL protocol field
            else:
                assert k2 == k - 16
        elif code == 0x06 and k:
            assert k2 == 1000 - 16  # snaplen counted from the network header


def test_cooked_program_maps_packet_type_and_refuses_other_sll_fields() -> None:
    inbound = for_cooked_socket(compile_filter("inbound", 113))
    assert inbound is not None
    assert any(k == 0xFFFFF004 for _c, _t, _f, k in inbound.instructions)  # SKF_AD_PKTTYPE
    # Bytes 6-7 lie in the SLL address field, which the kernel cannot offer.
    assert for_cooked_socket(compile_filter("ether[6:2] == 0x0200", 113)) is None


def test_direction_prefix() -> None:
    prog = accept_all(100)
    assert with_direction(prog, True, True) is prog
    assert with_direction(prog, False, False).instructions == ((0x06, 0, 0, 0),)
    only_in = with_direction(prog, True, False).instructions
    assert only_in[:3] == ((0x30, 0, 0, 0xFFFFF004), (0x15, 0, 1, 4), (0x06, 0, 0, 0))
    assert only_in[3:] == prog.instructions
    only_out = with_direction(prog, False, True).instructions
    assert only_out[1] == (0x15, 1, 0, 4)
    any_iface = with_direction(prog, True, True, loopback_index=1).instructions
    assert any_iface[2] == (0x20, 0, 0, 0xFFFFF008) and any_iface[3] == (0x15, 0, 1, 1)
    assert any_iface[5:] == prog.instructions
