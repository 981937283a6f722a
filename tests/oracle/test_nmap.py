"""scan against nmap on generated topologies (#14): random layouts of open,
closed, dropped and rejected TCP and UDP ports behind chains of routers
(tests/oracle/netgen.py); `scan --syn` vs `nmap -sS`, `scan` vs `nmap -sT`,
`scan --udp` vs `nmap -sU`: the same state and reason for every port. The known
differences are in docs/differences.md ("scan and nmap"); a failure prints the case."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import netgen
import pytest

from topology import Topology

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap not installed"),
]

METHODS = {"-sS": ["--syn"], "-sT": [], "-sU": ["--udp"]}


def normalised(ports: dict[int, tuple[str, str]], flag: str) -> dict[int, tuple[str, str]]:
    """Either side's ports with the reasons compared: for its connect scan (-sT),
    nmap's reason for a filtered port is the errno connect() returned (host-unreach
    for IPv4's admin-prohibited; admin-prohibited or, at times, no-response for
    IPv6's), where we read the ICMP error itself; there only the state is compared
    (docs/differences.md, "scan and nmap")."""
    if flag != "-sT":
        return ports
    return {port: (state, "" if state == "filtered" else why) for port, (state, why) in ports.items()}


def nmap_ports(xml: str) -> dict[int, tuple[str, str]]:
    out = {}
    for port in ET.fromstring(xml).iter("port"):
        state = port.find("state")
        assert state is not None
        out[int(port.get("portid", "0"))] = (state.get("state", ""), state.get("reason", ""))
    return out


def our_ports(text: str) -> dict[int, tuple[str, str]]:
    return {p["port"]: (p["state"], p["reason"]) for p in json.loads(text)["ports"]}


@pytest.mark.parametrize("seed", netgen.seeds(1500, 3))
def test_scan_finds_the_states_nmap_finds(topology: Topology, seed: int) -> None:
    case = netgen.generate(seed, rejecting=False)
    net = netgen.build(topology, case)
    ports = ",".join(map(str, sorted(case.tcp)))
    for flag, ours_flags in METHODS.items():
        family = ["-6"] if case.v6 else []
        theirs = subprocess.run(
            ["ip", "netns", "exec", net.left, "nmap", "-n", "-Pn", flag, *family, "--max-retries", "1",
             "-p", ports, "-oX", "-", net.dest],
            capture_output=True,
            text=True,
            timeout=120,
        )
        ours = subprocess.run(
            ["ip", "netns", "exec", net.left, sys.executable, "-m", "sockscope", "scan", *ours_flags,
             "--retries", "1", "-p", ports, "--json", net.dest],
            capture_output=True,
            text=True,
            timeout=120,
        )
        context = (
            f"{case.describe()}\nnmap {flag}:\n{theirs.stdout[-3000:]}{theirs.stderr}"
            f"\nsockscope:\n{ours.stdout}{ours.stderr}"
        )
        assert theirs.returncode == 0 and ours.returncode == 0, context
        expected = normalised(nmap_ports(theirs.stdout), flag)
        assert normalised(our_ports(ours.stdout), flag) == expected, context
