"""trace against Linux traceroute on generated topologies (#14): chains of random
length with silent and rejecting routers (tests/oracle/netgen.py), every method,
the same hops: per hop the same answering addresses and the same marks. The
known differences are in docs/differences.md ("trace and traceroute"); a failure
prints the case and both outputs."""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
from typing import Any

import netgen
import pytest

from topology import Topology

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(shutil.which("traceroute") is None, reason="traceroute not installed"),
]

# Normalised hop: (addresses that answered, marks shown), one per TTL printed.
Hop = tuple[frozenset[str], frozenset[str]]



def is_address(word: str) -> bool:
    try:
        ipaddress.ip_address(word)
    except ValueError:
        return False
    return True


def traceroute_hops(text: str) -> list[Hop]:
    """traceroute -n output, read as hops (docs/differences.md: what is compared)."""
    hops: list[Hop] = []
    for line in text.splitlines()[1:]:
        ttl, _, rest = line.strip().partition(" ")
        assert ttl.isdigit(), line
        addresses, marks = set(), set()
        for word in rest.split():
            if word.startswith("!"):
                marks.add(word)
            elif is_address(word):
                addresses.add(word)
        hops.append((frozenset(addresses), frozenset(marks)))
    return hops


def our_hops(result: dict[str, Any]) -> list[Hop]:
    return [
        (
            frozenset(p["address"] for p in hop["probes"] if p["address"]),
            frozenset(p["mark"] for p in hop["probes"] if p["mark"]),
        )
        for hop in result["hops"]
    ]


def normalised(ours: list[Hop], theirs: list[Hop]) -> list[Hop]:
    """Ours, read as traceroute prints it: a router that never sends time-exceeded
    but rejects the destination is silent at its hop k and answers "unreachable" at
    k + 1; traceroute with probes in flight prints that answer at k (with -N 1 at
    k + 1, as we do). docs/differences.md, "trace and traceroute"."""
    if (
        len(ours) >= 2
        and len(theirs) == len(ours) - 1
        and ours[-2] == (frozenset(), frozenset())
        and ours[-1][1]
        and ours[-1][0] <= theirs[-1][0] | ours[-1][0]
    ):
        return ours[:-2] + ours[-1:]
    return ours


def run(net: netgen.Net, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", net.left, *cmd], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("seed", netgen.seeds(1400, 3))
def test_trace_finds_the_hops_traceroute_finds(topology: Topology, seed: int) -> None:
    case = netgen.generate(seed)
    net = netgen.build(topology, case)
    for flag in ("", "-I", "-T"):  # UDP (traceroute's default method), ICMP echo, TCP SYN
        flags = [flag] if flag else []
        theirs = run(net, "traceroute", "-n", *flags, net.dest)
        ours = run(net, sys.executable, "-m", "sockscope", "trace", *flags, "--json", net.dest)
        context = (
            f"{case.describe()}\ntraceroute {flag}:\n{theirs.stdout}{theirs.stderr}"
            f"\nsockscope:\n{ours.stdout}{ours.stderr}"
        )
        assert theirs.returncode == 0 and ours.returncode == 0, context
        expected = traceroute_hops(theirs.stdout)
        assert normalised(our_hops(json.loads(ours.stdout)), expected) == expected, context
