"""`sockscope trace` is measured against traceroute, start-up included: its path must
not import the heavy standard modules (typing, enum, the socket wrapper, argparse, re,
collections, asyncio, dataclasses) that the lean path was built to avoid."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("typing", "enum", "socket", "argparse", "re", "collections", "asyncio", "dataclasses", "math")

PROBE = """
import sys
from sockscope.cli.main import _quick_args
args = _quick_args("trace", ["trace", "-I", "-q", "1", "192.0.2.1"])
assert args is not None, "the quick parser refused a usual trace command line"
import sockscope.probe.trace  # what run() imports before the first probe goes out
from sockscope.packets import decode  # and the decoders the replies meet
print(" ".join(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def test_the_trace_path_imports_nothing_heavy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{HEAVY!r}", repr(HEAVY))],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [], f"imported on trace's path: {out.stdout.strip()}"


def test_the_parser_is_still_argparse_for_anything_unusual() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sockscope", "trace", "--max", "x", "192.0.2.1"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--max-hops" in out.stderr
