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
    ],
)
def test_bad_arguments_fail_before_anything_is_sent(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and words in err and err.count("\n") == 1
