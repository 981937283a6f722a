"""Probing over a path narrower than the first link (r2 - r3 has an MTU of 1400), as
iputils ping and traceroute behave there (#12): "too big" reported and carried on
from, larger packets fragmented by the kernel, -M do / -F refused with the MTU, and
traceroute's !F-MTU mark that ends a trace. Never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import probe_net
import pytest

from topology import Topology

pytestmark = pytest.mark.needs_root


@pytest.fixture(scope="module")
def topo_net() -> Iterator[tuple[Topology, probe_net.ProbeNet]]:
    with Topology() as topo:
        net = probe_net.build(topo)
        probe_net.narrow(topo, net)
        yield topo, net


@pytest.fixture
def net(topo_net: tuple[Topology, probe_net.ProbeNet]) -> probe_net.ProbeNet:
    """The network, every learnt path MTU forgotten."""
    topo, net = topo_net
    probe_net.forget_path_mtus(topo, net)
    return net


def cli(net: probe_net.ProbeNet, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", net.left, sys.executable, "-m", "sockscope", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def r2(net: probe_net.ProbeNet, v6: bool) -> str:
    """r2's address towards us: who says "too big" (the one hop 2 would have)."""
    link = net.line.links[1]
    address = link.addr6_b if v6 else link.addr_b
    assert address is not None
    return address


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_ping_reports_too_big_and_carries_on_fragmenting(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "ping", "-c", "4", "-i", "0.1", "-s", "1400", net.dest(v6))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = "Packet too big: mtu=1400" if v6 else "Frag needed and DF set (mtu = 1400)"
    assert f"From {r2(net, v6)} icmp_seq=1 {text}" in proc.stdout
    # Sent again fragmented to the learnt MTU; the first reply back may meet the same
    # narrow link (the destination learns it then), so at least the last two come.
    replies = re.findall(r"^1408 bytes from .* icmp_seq=(\d)", proc.stdout, re.M)
    assert {"3", "4"} <= set(replies), proc.stdout
    assert re.search(r"^4 packets transmitted, \d received, \+1 errors", proc.stdout, re.M)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_ping_sends_more_than_the_interface_mtu_in_fragments(net: probe_net.ProbeNet, v6: bool) -> None:
    proc = cli(net, "ping", "-c", "3", "-i", "0.1", "-s", "1600", net.dest(v6))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1608 bytes from" in proc.stdout


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_ping_m_do_is_refused_locally_with_the_mtu(net: probe_net.ProbeNet, v6: bool) -> None:
    cli(net, "ping", "-c", "1", "-s", "1400", net.dest(v6))  # learn the path MTU
    proc = cli(net, "ping", "-c", "2", "-i", "0.1", "-M", "do", "-s", "1400", net.dest(v6))
    assert proc.returncode == 1  # sent nothing that could be answered: no reply
    assert proc.stderr.splitlines() == ["sockscope ping: local error: message too long, mtu=1400"] * 2
    assert "2 packets transmitted, 0 received, +2 errors, 100% packet loss" in proc.stdout


def test_trace_dont_fragment_marks_the_narrow_hop_and_stops(net: probe_net.ProbeNet) -> None:
    proc = cli(net, "trace", "-F", "-I", "--json", net.dest(False), "1450")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    last = result["hops"][-1]
    assert last["ttl"] == 3 and result["reached"] is False
    assert [(p["address"], p["mark"]) for p in last["probes"]] == [(r2(net, False), "!F-1400")] * 3
    text = cli(net, "trace", "-F", "-I", "-q", "1", net.dest(False), "1450").stdout.splitlines()
    assert re.fullmatch(rf" 3  {re.escape(r2(net, False))}  [\d.]+ ms !F-1400", text[-1])


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_trace_dont_fragment_larger_than_the_interface_is_refused_here(
    net: probe_net.ProbeNet, v6: bool
) -> None:
    proc = cli(net, "trace", "-F", "-q", "2", net.dest(v6), "1600")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and re.fullmatch(r" 1  \*  [\d.]+ ms !F-1500 \*  [\d.]+ ms !F-1500", lines[1])


@pytest.mark.parametrize("method", ["-I", "-U", "-T"])
def test_trace_over_a_learnt_mtu_sends_fragments_and_reaches(net: probe_net.ProbeNet, method: str) -> None:
    # IPv6 routers never fragment: once the path MTU is known, the kernel fragments the
    # probes itself, and the time-exceeded messages quote a fragment header.
    cli(net, "ping", "-c", "1", "-s", "1400", net.dest(True))
    proc = cli(net, "trace", method, "--json", net.dest(True), "1450")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["reached"] is True
    assert [h["probes"][0]["address"] for h in result["hops"][:3]] == net.hops(True)[:3]


def test_trace_tcp_sends_the_length_it_announces(net: probe_net.ProbeNet) -> None:
    # The SYN carries 1410 bytes after its options; the destination's reset acknowledges
    # them, and only a probe that long is matched by it.
    proc = cli(net, "trace", "-T", "--json", net.dest(False), "1450")
    result = json.loads(proc.stdout)
    assert result["reached"] is True
    assert [p["notes"] for p in result["hops"][-1]["probes"]] == [["tcp RST"]] * 3
    header = cli(net, "trace", "-T", "-q", "1", net.dest(False)).stdout.splitlines()[0]
    assert header.endswith(", 30 hops max, 60 byte packets")  # a SYN with Linux's options, as traceroute
