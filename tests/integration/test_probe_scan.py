"""scan of a namespace host with open, closed, dropped and rejected ports: every
method, both families, the states and reasons the topology implies."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import probe_net
import pytest
from probe_child import in_netns
from probe_net import CLOSED, DROPPED, OPEN, PROHIBITED, UDP_CLOSED, UDP_DROPPED, UDP_OPEN

from topology import Topology

pytestmark = pytest.mark.needs_root

TCP_PORTS = f"{OPEN}-{PROHIBITED}"
UDP_PORTS = f"{UDP_OPEN}-{UDP_DROPPED}"


@pytest.fixture(scope="module")
def net() -> Iterator[probe_net.ProbeNet]:
    with Topology() as topo:
        yield probe_net.build(topo)


def cli(net: probe_net.ProbeNet, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", net.left, sys.executable, "-m", "sockscope", "scan", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def states(result: dict[str, Any]) -> dict[int, tuple[str, str]]:
    return {p["port"]: (p["state"], p["reason"]) for p in result["ports"]}


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_syn_scan(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "--syn", "-p", TCP_PORTS, "--json", net.dest(v6))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["host"], result["address"], result["method"]) == (net.dest(v6), net.dest(v6), "syn")
    assert states(result) == {
        OPEN: ("open", "syn-ack"),
        CLOSED: ("closed", "reset"),
        DROPPED: ("filtered", "no-response"),
        PROHIBITED: ("filtered", "admin-prohibited"),
    }
    assert {p["proto"] for p in result["ports"]} == {"tcp"}
    assert next(p for p in result["ports"] if p["port"] == PROHIBITED)["reason_from"] == net.dest(v6)
    # The dropped port was tried twice (one retransmission by default).
    assert result["probes_sent"] == 5


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_connect_scan(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "-p", TCP_PORTS, "--json", net.dest(v6))
    assert proc.returncode == 0, proc.stderr
    found = states(json.loads(proc.stdout))
    assert found[OPEN] == ("open", "syn-ack")
    assert found[CLOSED] == ("closed", "conn-refused")
    assert found[DROPPED] == ("filtered", "no-response")
    # IPv4's admin-prohibited fails connect() with EHOSTUNREACH, IPv6's with EACCES:
    # the ICMP error itself, from the error queue, tells them apart from host-unreach.
    assert found[PROHIBITED] == ("filtered", "admin-prohibited")
    prohibited = next(p for p in json.loads(proc.stdout)["ports"] if p["port"] == PROHIBITED)
    assert prohibited["reason_from"] == net.dest(v6)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_udp_scan(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "--udp", "-p", UDP_PORTS, "--json", net.dest(v6))
    assert proc.returncode == 0, proc.stderr
    assert states(json.loads(proc.stdout)) == {
        UDP_OPEN: ("open", "udp-response"),
        UDP_CLOSED: ("closed", "port-unreach"),
        UDP_DROPPED: ("open|filtered", "no-response"),
    }


def test_a_router_saying_unreachable_filters_every_port(net: probe_net.ProbeNet) -> None:
    proc = cli(net, "--syn", "-p", "22,80", "--json", net.unreach(False))
    result = json.loads(proc.stdout)
    r3 = net.hops(False)[2]
    assert [(p["state"], p["reason"], p["reason_from"]) for p in result["ports"]] == [
        ("filtered", "host-unreach", r3)
    ] * 2


def test_text_output_hides_the_common_state(net: probe_net.ProbeNet) -> None:
    proc = cli(net, "--syn", "-p", "8000-8100", net.dest(False))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"scan of {net.dest(False)} ({net.dest(False)}): 101 tcp ports, syn, ")
    assert lines[1] == "Not shown: 98 closed tcp ports (reset)"
    assert lines[2].split() == ["PORT", "STATE", "REASON"]
    assert [line.split()[:2] for line in lines[3:]] == [
        [f"{OPEN}/tcp", "open"],
        [f"{DROPPED}/tcp", "filtered"],
        [f"{PROHIBITED}/tcp", "filtered"],
    ]


def test_rate_limit_paces_probes(net: probe_net.ProbeNet) -> None:
    # 50 closed ports at 100 probes/s take about half a second; unlimited, far less.
    def timed(rate: float) -> float:
        import sockscope

        return sockscope.scan(net.dest(False), "9000-9049", method="syn", rate=rate).elapsed_ms

    assert 450 <= in_netns(net.left, lambda: timed(100)) < 2000
    assert in_netns(net.left, lambda: timed(0)) < 400


def test_unprivileged_scans(net: probe_net.ProbeNet) -> None:
    def run(method: str) -> Any:
        import sockscope

        try:
            return sockscope.scan(net.dest(False), TCP_PORTS, method=method).to_dict()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    assert states(in_netns(net.left, lambda: run("connect"), nobody=True))[OPEN] == ("open", "syn-ack")
    msg = in_netns(net.left, lambda: run("syn"), nobody=True)
    assert msg.startswith("PermissionNeeded: ") and "CAP_NET_RAW" in msg


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-p", "80,x", "198.51.100.26"], "bad port list"),
        (["-p", "0-10", "198.51.100.26"], "ports are 1-65535"),
        (["-p", "90-80", "198.51.100.26"], "runs backwards"),
        (["-p", "1,,2", "198.51.100.26"], "empty entry"),
        (["-p", "80", "no-such-host.invalid"], "unknown host"),
        (["-p", "80", "-4", "2001:db8:4::2"], "IPv6 address"),
        (["-p", "80", "--rate=-1", "198.51.100.26"], "rate must not be negative"),
        (["-p", "80", "--retries", "99", "198.51.100.26"], "retries 99 out of range"),
    ],
)
def test_bad_input_is_one_line_and_status_2(net: probe_net.ProbeNet, args: list[str], words: str) -> None:
    proc = cli(net, *args)
    assert proc.returncode == 2
    assert words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""
