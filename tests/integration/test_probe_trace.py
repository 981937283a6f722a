"""trace against namespaces whose path is known: every method, both families,
a silent router, a host-unreachable destination, the unprivileged fallback,
many traces at once, TOS rewritten on the way, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import probe_net
import pytest
from probe_child import in_netns

from topology import Topology

pytestmark = pytest.mark.needs_root


@pytest.fixture(scope="module")
def topo_net() -> Iterator[tuple[Topology, probe_net.ProbeNet]]:
    with Topology() as topo:
        built = probe_net.build(topo)
        # r1 rewrites the TOS / traffic class of what it forwards: later routers quote it.
        topo.nft(built.line.routers[0], probe_net.REWRITE_TOS)
        yield topo, built


@pytest.fixture
def net(topo_net: tuple[Topology, probe_net.ProbeNet]) -> probe_net.ProbeNet:
    return topo_net[1]


@pytest.fixture
def ping_sockets_for_all(topo_net: tuple[Topology, probe_net.ProbeNet]) -> Iterator[None]:
    """ICMP datagram sockets allowed to every group in left (nobody too), as long as
    the test runs; then back to the default, which allows none."""
    topo, net = topo_net
    topo.set_sysctl(net.line.left, "net.ipv4.ping_group_range", "0 2147483647")
    try:
        yield
    finally:
        topo.set_sysctl(net.line.left, "net.ipv4.ping_group_range", "1 0")


def cli(net: probe_net.ProbeNet, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", net.left, sys.executable, "-m", "sockscope", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def addresses(result: dict[str, Any]) -> list[str | None]:
    """One address per hop; fails if the probes of a hop disagree."""
    out = []
    for hop in result["hops"]:
        seen = {p["address"] for p in hop["probes"]}
        assert len(seen) == 1, hop
        out.append(seen.pop())
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("method", ["-U", "-I", "-T"])
def test_hops_match_the_topology(net: probe_net.ProbeNet, method: str, v6: bool) -> None:
    proc = cli(net, "trace", method, "--json", net.dest(v6))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["method"] == {"-U": "udp", "-I": "icmp", "-T": "tcp"}[method]
    assert result["address"] == net.dest(v6)
    assert addresses(result) == net.hops(v6)
    assert result["reached"] is True
    assert [h["ttl"] for h in result["hops"]] == [1, 2, 3, 4]
    for hop in result["hops"]:
        for probe in hop["probes"]:
            assert probe["mark"] is None
            if probe["address"] is None:
                assert probe["rtt_ms"] is None and probe["icmp"] is None
            else:
                assert 0 < probe["rtt_ms"] < 1000
    last = result["hops"][-1]["probes"][0]
    if method == "-U":  # the destination's port unreachable
        assert last["icmp"] == {"type": 3, "code": 3} if not v6 else {"type": 1, "code": 4}
    elif method == "-I":
        assert last["icmp"] == ({"type": 0, "code": 0} if not v6 else {"type": 129, "code": 0})
    else:
        assert last["icmp"] is None  # a TCP RST or SYN-ACK


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("method", ["-U", "-I", "-T"])
def test_host_unreachable_is_marked(net: probe_net.ProbeNet, method: str, v6: bool) -> None:
    proc = cli(net, "trace", method, net.unreach(v6))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"traceroute to {net.unreach(v6)} ({net.unreach(v6)}), 30 hops max")
    r3 = net.hops(v6)[2]
    assert lines[1].split()[:2] == ["1", net.hops(v6)[0]]
    assert lines[2].split() == ["2", "*", "*", "*"]
    assert lines[4].split()[:2] == ["4", r3] and lines[4].count("!H") == 3
    assert len(lines) == 5


def test_silent_hop_is_not_waited_for(net: probe_net.ProbeNet) -> None:
    # Later hops answer within milliseconds, so the silent router costs 10x that,
    # not the 5 s maximum.
    result = in_netns(net.left, lambda: _trace(net.dest(False)))
    assert result["elapsed_ms"] < 2000
    assert addresses(result) == net.hops(False)


def _trace(host: str, **options: Any) -> dict[str, Any]:
    import sockscope

    result = sockscope.trace(host, **options)
    return {**result.to_dict(), "elapsed_ms": result.elapsed_ms, "unprivileged": result.unprivileged}


def test_many_traces_at_once_in_one_process(net: probe_net.ProbeNet) -> None:
    def many() -> list[dict[str, Any]]:
        import asyncio

        from sockscope.probe import atrace

        async def all_of_them() -> list[dict[str, Any]]:
            runs = [atrace(net.dest(v6), method=m) for v6 in (False, True) for m in ("udp", "icmp", "tcp")]
            return [r.to_dict() for r in await asyncio.gather(*runs)]

        return asyncio.run(all_of_them())

    results = in_netns(net.left, many)
    assert len(results) == 6
    for i, result in enumerate(results):
        assert addresses(result) == net.hops(i >= 3), result
        assert result["reached"]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_unprivileged_user_gets_the_path_over_udp(net: probe_net.ProbeNet, v6: bool) -> None:
    result = in_netns(net.left, lambda: _trace(net.dest(v6)), nobody=True)
    assert result["unprivileged"] is True
    assert addresses(result) == net.hops(v6)
    assert result["reached"]
    unreach = in_netns(net.left, lambda: _trace(net.unreach(v6)), nobody=True)
    assert [p["mark"] for p in unreach["hops"][-1]["probes"]] == ["!H"] * 3


@pytest.mark.usefixtures("ping_sockets_for_all")
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("method", ["icmp", "tcp"])
def test_unprivileged_icmp_and_tcp_get_the_path(net: probe_net.ProbeNet, method: str, v6: bool) -> None:
    # -I over an ICMP datagram socket, -T with a connect() per probe (traceroute -M tcpconn).
    result = in_netns(net.left, lambda: _trace(net.dest(v6), method=method), nobody=True)
    assert (result["unprivileged"], result["method"]) == (True, method)
    assert addresses(result) == net.hops(v6)
    assert result["reached"] is True
    assert [h["ttl"] for h in result["hops"]] == [1, 2, 3, 4]
    last = result["hops"][-1]["probes"]
    if method == "icmp":
        assert [p["icmp"] for p in last] == [{"type": 129 if v6 else 0, "code": 0}] * 3
        assert "ICMP datagram socket" in result["notes"][0]
    else:  # nothing listens on port 80: refused, the RST came from the destination
        assert [(p["icmp"], p["notes"]) for p in last] == [(None, ["tcp RST"])] * 3
        assert "flow identifier is not kept" in result["notes"][0]
    for hop in result["hops"][:-1]:
        for probe in hop["probes"]:
            if probe["address"] is not None:
                assert probe["icmp"] == ({"type": 3, "code": 0} if v6 else {"type": 11, "code": 0})
                assert probe["mark"] is None and 0 < probe["rtt_ms"] < 1000
    unreach = in_netns(net.left, lambda: _trace(net.unreach(v6), method=method), nobody=True)
    r3 = net.hops(v6)[2]
    assert addresses(unreach) == [*net.hops(v6)[:3], r3]  # r3: time exceeded, then unreachable
    assert [p["mark"] for p in unreach["hops"][-1]["probes"]] == ["!H"] * 3
    assert unreach["reached"] is False


def test_unprivileged_tcp_connects_under_asyncio(net: probe_net.ProbeNet) -> None:
    # Sockets opened per probe while the loop runs; a connect that completes is the destination.
    def both() -> list[dict[str, Any]]:
        import asyncio

        from sockscope.probe import atrace

        async def run() -> list[dict[str, Any]]:
            runs = [atrace(net.dest(v6), method="tcp", port=probe_net.OPEN) for v6 in (False, True)]
            return [r.to_dict() for r in await asyncio.gather(*runs)]

        return asyncio.run(run())

    for v6, result in zip((False, True), in_netns(net.left, both, nobody=True), strict=True):
        assert addresses(result) == net.hops(v6) and result["reached"] is True
        assert [p["notes"] for p in result["hops"][-1]["probes"]] == [["tcp SYN-ACK"]] * 3


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_unprivileged_icmp_falls_back_to_udp_saying_why(net: probe_net.ProbeNet, v6: bool) -> None:
    # ping_group_range is at its default ("1 0"): no group may open ICMP datagram sockets.
    got = in_netns(net.left, lambda: _main("trace", "-I", "--json", net.dest(v6)), nobody=True)
    assert got["code"] == 0, got["err"]
    err_lines = got["err"].splitlines()
    assert len(err_lines) == 1, got["err"]
    assert err_lines[0].startswith("sockscope trace: ICMP probes need CAP_NET_RAW")
    assert "ping_group_range" in err_lines[0] and "using UDP probes (port 33434) instead" in err_lines[0]
    result = json.loads(got["out"])
    assert (result["method"], result["port"]) == ("udp", 33434)
    assert addresses(result) == net.hops(v6) and result["reached"] is True
    assert "UDP probes through an ordinary socket" in result["notes"][0]


def test_verbose_shows_the_tos_rewritten_on_the_way(net: probe_net.ProbeNet) -> None:
    proc = cli(net, "trace", "-I", "-v", "-q", "1", net.dest(False))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # r1 itself quotes what it received; r3 (hop 3) quotes what r1 sent on.
    assert "TOS" not in lines[1]
    assert "<TOS 0x00 arrived as 0x20>" in lines[3]
    assert lines[-1].startswith("reached in ") and "ignored" in lines[-1]


def test_limits_shorten_the_trace(net: probe_net.ProbeNet) -> None:
    proc = cli(net, "trace", "-f", "2", "-m", "3", "-q", "1", "-w", "0.3", "--json", net.dest(True))
    result = json.loads(proc.stdout)
    assert [h["ttl"] for h in result["hops"]] == [2, 3]
    assert addresses(result) == net.hops(True)[1:3]
    assert result["reached"] is False


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["no-such-host.invalid"], "unknown host"),
        (["-4", "2001:db8:4::2"], "IPv6 address"),
        (["-6", "198.51.100.26"], "IPv4 address"),
        (["-m", "256", "198.51.100.26"], "max TTL 256 out of range"),
        (["-f", "0", "198.51.100.26"], "first TTL 0 out of range"),
        (["-f", "9", "-m", "3", "198.51.100.26"], "beyond the max TTL"),
        (["198.51.100.26", "70000"], "too large: the packet would be 70000 bytes"),
        (["-p", "70000", "198.51.100.26"], "port 70000 out of range"),
        (["-w", "x", "198.51.100.26"], "bad wait"),
        (["-q", "x", "198.51.100.26"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_status_2(net: probe_net.ProbeNet, args: list[str], words: str) -> None:
    proc = cli(net, "trace", *args)
    assert proc.returncode == 2
    assert words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""


def test_names_with_r(net: probe_net.ProbeNet) -> None:
    # getaddrinfo/getnameinfo answer for loopback from /etc/hosts: no DNS involved.
    proc = cli(net, "trace", "-I", "-r", "-q", "2", "127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.splitlines()[1]
    assert line.startswith(" 1  localhost (127.0.0.1)  ") and line.count(" ms") == 2
    proc = cli(net, "trace", "-r", "-q", "1", "--json", "localhost")
    hop = json.loads(proc.stdout)["hops"][0]["probes"][0]
    assert (hop["address"], hop["name"]) == ("127.0.0.1", "localhost")


def _main(*argv: str) -> dict[str, Any]:
    """The CLI run in this process: exit status, stdout, stderr."""
    import contextlib
    import io

    from sockscope.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return {"code": code, "out": out.getvalue(), "err": err.getvalue()}


def test_unprivileged_tcp_verbose_says_the_flow_is_not_kept(net: probe_net.ProbeNet) -> None:
    got = in_netns(net.left, lambda: _main("trace", "-T", "-v", "-q", "1", net.dest(False)), nobody=True)
    assert (got["code"], got["err"]) == (0, "")
    lines = got["out"].splitlines()
    assert [line.split()[:2] for line in lines[1:5]] == [["1", str(net.hops(False)[0])], ["2", "*"]] + [
        [str(ttl), addr] for ttl, addr in ((3, net.hops(False)[2]), (4, net.dest(False)))
    ]
    assert lines[5].startswith("note: TCP connect() per probe") and "flow identifier is not kept" in lines[5]
    assert lines[6].startswith("reached in ") and "(no CAP_NET_RAW)" in lines[6]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_service_answering_the_probes_is_the_destination(net: probe_net.ProbeNet, v6: bool) -> None:
    # traceroute -U -p 53 style: right's UDP service answers the probes that reach it.
    proc = cli(net, "trace", "-U", "-p", str(probe_net.UDP_OPEN), "--json", net.dest(v6))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert addresses(result) == net.hops(v6) and result["reached"] is True
    assert [p["notes"] for p in result["hops"][-1]["probes"]] == [["udp reply"]] * 3
    unpriv = in_netns(net.left, lambda: _trace(net.dest(v6), port=probe_net.UDP_OPEN), nobody=True)
    assert addresses(unpriv) == net.hops(v6) and unpriv["reached"] is True


def test_hex_tos_and_a_source_address(net: probe_net.ProbeNet) -> None:
    proc = cli(net, "trace", "-I", "-v", "-q", "1", "-t", "0x20", "-s", net.line.left_addr, net.dest(False))
    assert proc.returncode == 0, proc.stderr
    # r1 rewrites the TOS to 0x20 (CS1): sent as 0x20, it arrives unchanged, so no note.
    assert "TOS" not in proc.stdout and proc.stdout.splitlines()[4].split()[:2] == ["4", net.dest(False)]
    proc = cli(net, "trace", "-s", "198.51.100.77", net.dest(False))
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == "sockscope trace: cannot send from 198.51.100.77: Cannot assign requested address\n"
