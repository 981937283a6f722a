"""ping against iputils ping on generated topologies (#14): destinations that drop
some echo requests, routers that reject them, no route at all; the same counts of
requests sent, replies, errors, and the same exit status. The known differences are
in docs/differences.md ("ping and iputils ping"); a failure prints the case."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import netgen
import pytest

from topology import Topology

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(shutil.which("ping") is None, reason="iputils ping not installed"),
]

SUMMARY = re.compile(
    r"^(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?(?:, \+(\d+) errors)?", re.M
)
COUNT = 8


def summary(proc: subprocess.CompletedProcess[str]) -> tuple[int, int, int, int]:
    """(exit status, sent, received, errors) of a ping run."""
    found = SUMMARY.search(proc.stdout)
    if found is None:
        return proc.returncode, 0, 0, 0
    sent, received, _dups, errors = found.groups()
    return proc.returncode, int(sent), int(received), int(errors or 0)


def both(ns: str, *args: str) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=60)

    return run("ping", "-n", *args), run(sys.executable, "-m", "sockscope", "ping", *args)


@pytest.mark.parametrize("seed", netgen.seeds(1700, 3))
def test_ping_counts_what_iputils_counts(topology: Topology, seed: int) -> None:
    case = netgen.generate(seed)
    net = netgen.build(topology, case)
    runs = (
        ["-c", str(COUNT), "-i", "0.05", "-W", "0.5"],
        ["-c", "3", "-w", "1", "-i", "0.05"],  # a deadline: stops at COUNT answers or an error
    )
    for args in runs:
        theirs, ours = both(net.left, *args, net.dest)
        context = (
            f"{case.describe()}\nping {' '.join(args)}:\n{theirs.stdout}{theirs.stderr}"
            f"\nsockscope:\n{ours.stdout}{ours.stderr}"
        )
        assert summary(ours) == summary(theirs), context
        if args is runs[0] and case.reject is None:  # the sequences the destination drops are the loss
            lost = len([s for s in case.dropped_echoes if s <= COUNT])
            assert summary(ours) == (1 if lost == COUNT else 0, COUNT, COUNT - lost, 0), context


def test_no_route_is_status_2_for_both(topology: Topology) -> None:
    lonely = topology.add_netns("lonely")
    for dest in ("198.51.100.26", "2001:db8::1"):
        theirs, ours = both(lonely.name, "-c", "1", dest)
        assert (theirs.returncode, ours.returncode) == (2, 2), theirs.stderr + ours.stderr
        assert ours.stderr == "sockscope ping: connect: Network is unreachable\n"
