"""The probe commands' formatting and argument checks (no root, no packets sent)."""

from __future__ import annotations

import pytest

from sockscope.cli.main import main
from sockscope.cli.trace import format_hop
from sockscope.probe.model import TraceHop, TraceProbe


def test_hops_print_like_traceroute() -> None:
    hop = TraceHop(
        3, [TraceProbe(3, "192.0.2.1", 1.2345), TraceProbe(3), TraceProbe(3, "192.0.2.7", 0.5, 3, 1, "!H")]
    )
    assert format_hop(hop, False) == " 3  192.0.2.1  1.234 ms * 192.0.2.7  0.500 ms !H"
    assert format_hop(TraceHop(12, [TraceProbe(12)] * 3), False) == "12  * * *"
    named = TraceProbe(1, "127.0.0.1", 0.1, name="localhost", notes=("quoted TTL 2",))
    assert format_hop(TraceHop(1, [named, named]), True) == (
        " 1  localhost (127.0.0.1)  0.100 ms <quoted TTL 2>  0.100 ms <quoted TTL 2>"
    )


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["ping", "-t", "0", "127.0.0.1"], "TTL 0 out of range 1-255"),
        (["ping", "-s=-5", "127.0.0.1"], "size -5 is negative"),
        (["ping", "-W", "0", "127.0.0.1"], "timeout must be positive"),
        (["trace", "-w", "1,2,3,4", "127.0.0.1"], "bad wait"),
        (["trace", "-q", "11", "127.0.0.1"], "probes per hop 11 out of range"),
        (["trace", "-N", "0", "127.0.0.1"], "parallel probes 0 out of range"),
        (["trace", "127.0.0.1", "20"], "packet length 20 too small"),
        (["scan", "-p", "1-", "--retries=-1", "127.0.0.1"], "retries -1 out of range"),
        (["scan", "-p", "http", "127.0.0.1"], "bad port list"),
        # Negative values reach the range checks (argparse alone would say "expected one argument").
        (["ping", "-c", "-1", "127.0.0.1"], "count -1 out of range 1-2147483647"),
        (["ping", "-c", "0", "127.0.0.1"], "count 0 out of range 1-2147483647"),
        (["ping", "-s", "-1", "127.0.0.1"], "size -1 is negative"),
        (["ping", "-W", "-1", "127.0.0.1"], "timeout must be positive, got -1.0"),
        (["ping", "-w", "-2", "127.0.0.1"], "deadline must be positive, got -2.0"),
        (["ping", "-p", "xyz", "127.0.0.1"], "bad pattern 'xyz'"),
        (["scan", "-p", "80", "--rate", "-1", "127.0.0.1"], "rate must not be negative"),
        (["trace", "-q", "-1", "127.0.0.1"], "probes per hop -1 out of range"),
        (["trace", "-t", "0x100", "127.0.0.1"], "TOS 256 out of range 0-255"),
    ],
)
def test_bad_arguments_fail_before_anything_is_sent(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and words in err and err.count("\n") == 1


def test_trace_takes_a_hex_tos_as_traceroute_does() -> None:
    from sockscope.cli.main import _quick_args
    from sockscope.cli.parser import build_parser

    assert _quick_args("trace", ["trace", "-t", "0x10", "192.0.2.1"]).tos == 16
    assert build_parser("trace").parse_args(["trace", "-t", "0x10", "-n", "-I", "192.0.2.1"]).tos == 16


def test_ping_deadline_takes_its_number_not_the_host() -> None:
    from sockscope.cli.parser import build_parser

    args = build_parser("ping").parse_args(["ping", "-w", "2", "192.0.2.1"])
    assert (args.deadline, args.host) == (2.0, "192.0.2.1")
