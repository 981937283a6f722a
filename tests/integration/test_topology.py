"""Tests of the test harness itself: tests/topology.py and the rules in tests/conftest.py."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from topology import (
    Netns,
    Topology,
    TopologyError,
    cleanup_stale,
    list_netns,
    netns_pids,
    pid_alive,
)

TESTS_DIR = Path(__file__).resolve().parents[1]
# Name under which tests/conftest.py registers its SuiteRules plugin.
RULES_PLUGIN = "sockscope-test-rules"


def host_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(": ")[1].split("@")[0] for line in out.stdout.splitlines()}


def wait_until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def dead_pid() -> int:
    """A pid that certainly belonged to a process that has exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# ---------------------------------------------------------------------------
# Building topologies


def test_netns_naming_and_lo(topology: Topology) -> None:
    a = topology.add_netns("a")
    assert a.name.startswith(f"ssc-{os.getpid()}-") and a.name.endswith("-a")
    assert a.path == f"/run/netns/{a.name}" and Path(a.path).exists()
    assert a.name in list_netns()
    lo = topology.run(a, "ip", "-o", "link", "show", "lo").stdout
    assert "UP" in lo.split("<")[1].split(">")[0]
    # Two topologies of one process must not collide on the same label.
    with Topology() as other:
        assert other.add_netns("a").name != a.name


def test_veth_ipv4_and_ipv6_between_namespaces(topology: Topology) -> None:
    a, b = topology.add_netns("a"), topology.add_netns("b")
    before = host_links()
    veth = topology.add_veth(a, b, "198.51.100.1/24", "198.51.100.2/24", "2001:db8::1/64", "2001:db8::2/64")
    assert veth == ("eth0", "eth0")
    assert host_links() == before, "veth ends must be created inside the namespaces"
    addrs_b = topology.run(b, "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert "198.51.100.2/24" in addrs_b and "2001:db8::2/64" in addrs_b
    # nodad: the global address is usable at once (the link-local may still be
    # settling; nothing here depends on it).
    (global6,) = [line for line in addrs_b.splitlines() if "2001:db8::2/64" in line]
    assert "tentative" not in global6

    topology.start_udp_echo(b, "198.51.100.2")
    topology.start_udp_echo(b, "2001:db8::2")
    # The echo reports the source address it saw: proves the datagram came over
    # the veth from a's address, not from some local shortcut.
    assert topology.udp_probe(a, "198.51.100.2") == "198.51.100.1"
    # One try with a short wait: the very first datagram must get through, i.e.
    # add_veth returned only once IPv6 was set up on both ends (otherwise the
    # neighbour solicitation is lost and only the 1 s retransmit gets an answer).
    assert topology.udp_probe(a, "2001:db8::2", tries=1, wait=0.5) == "2001:db8::1"
    # And something that is not there is really not reachable.
    assert topology.udp_probe(a, "198.51.100.3", tries=1, wait=0.3) is None

    # A second link between the same pair gets the next names.
    assert topology.add_veth(a, b, "203.0.113.1/24", "203.0.113.2/24") == ("eth1", "eth1")


def test_line_with_one_router(topology: Topology) -> None:
    line = topology.line(n_routers=1)
    assert [ns.label for ns in line.nodes] == ["left", "r1", "right"]
    (router,) = line.routers
    fwd = topology.run(router, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip()
    assert fwd == "1"
    topology.start_udp_echo(line.right, line.right_addr)
    topology.start_udp_echo(line.right, line.right_addr6)
    assert topology.udp_probe(line.left, line.right_addr) == line.left_addr
    assert topology.udp_probe(line.left, line.right_addr6) == line.left_addr6
    # Without forwarding on the router the path must break: the probe above really
    # went through r1.
    topology.set_sysctl(router, "net.ipv4.ip_forward", 0)
    assert topology.udp_probe(line.left, line.right_addr, tries=2, wait=0.3) is None


def test_line_with_two_routers_routes_remote_hops(topology: Topology) -> None:
    line = topology.line(n_routers=2)
    assert len(line.links) == 3
    topology.start_udp_echo(line.right, line.right_addr)
    topology.start_udp_echo(line.right, line.right_addr6)
    topology.start_udp_echo(line.left, line.left_addr)
    assert topology.udp_probe(line.left, line.right_addr) == line.left_addr
    assert topology.udp_probe(line.left, line.right_addr6) == line.left_addr6
    assert topology.udp_probe(line.right, line.left_addr) == line.right_addr
    # r1 needs a route to the far hop (r2-right), which is not directly connected.
    routes = topology.run(line.routers[0], "ip", "route", "show", "198.51.100.16/29").stdout
    assert "via 198.51.100.10" in routes


def test_add_route_and_sysctl(topology: Topology) -> None:
    a, b = topology.add_netns("a"), topology.add_netns("b")
    topology.add_veth(a, b, addr6_a="2001:db8::1/64", addr6_b="2001:db8::2/64")
    topology.add_route(a, "192.0.2.0/24", "198.51.100.2")
    topology.add_route(a, "2001:db8:ff::/48", "2001:db8::2")
    assert "192.0.2.0/24 via 198.51.100.2" in topology.run(a, "ip", "route").stdout
    assert "2001:db8:ff::/48 via 2001:db8::2" in topology.run(a, "ip", "-6", "route").stdout
    topology.set_sysctl(a, "net.ipv4.ip_forward", 1)
    assert topology.run(a, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    # Per namespace: b is untouched.
    assert topology.run(b, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "0"


def test_run_reports_failures(topology: Topology) -> None:
    a = topology.add_netns("a")
    assert topology.run(a, "sh", "-c", "echo out; exit 3", check=False).returncode == 3
    with pytest.raises(TopologyError, match="no such device"):
        topology.run(a, "sh", "-c", "echo no such device >&2; exit 1")


def test_nft_rules_are_per_namespace(topology: Topology) -> None:
    a, b = topology.add_netns("a"), topology.add_netns("b")
    topology.add_veth(a, b)
    topology.start_udp_echo(b, "198.51.100.2")
    assert topology.udp_probe(a, "198.51.100.2") == "198.51.100.1"
    topology.nft(
        b,
        """
        table inet ssc_test {
            chain input {
                type filter hook input priority 0; policy accept;
                udp dport 7 drop
            }
        }
        """,
    )
    assert "ssc_test" in topology.run(b, "nft", "list", "tables").stdout
    assert topology.udp_probe(a, "198.51.100.2", tries=2, wait=0.3) is None
    assert "ssc_test" not in topology.run(a, "nft", "list", "tables").stdout
    host = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    assert "ssc_test" not in host.stdout


def test_host_side_veth(topology: Topology) -> None:
    a = topology.add_netns("a")
    # A /30 of TEST-NET-3 of our own: the only host route this adds points at a.
    veth = topology.add_veth(a, None, "203.0.113.249/30", "203.0.113.250/30")
    assert veth.name_a == "eth0"
    assert veth.name_b.startswith(f"ssc{os.getpid()}h") and len(veth.name_b) <= 15
    assert veth.name_b in host_links()
    topology.start_udp_echo(a, "203.0.113.249")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(b"hi", ("203.0.113.249", 7))
        assert s.recvfrom(100)[0] == b"hi|203.0.113.250"
    topology.close()
    assert veth.name_b not in host_links()


def test_bad_arguments_are_rejected(topology: Topology) -> None:
    a = topology.add_netns("a")
    for label in ("", "a/b", "-x", "x" * 33, "a"):
        with pytest.raises(ValueError):
            topology.add_netns(label)
    b = topology.add_netns("b")
    with pytest.raises(ValueError, match="at most 15"):
        topology.add_veth(a, b, name_a="sixteen-chars-xx")
    with pytest.raises(ValueError, match="same namespace"):
        topology.add_veth(a, a)
    with pytest.raises(ValueError, match="does not belong"):
        topology.run(Netns("ssc-0-0000-foreign", "foreign"), "true")


# ---------------------------------------------------------------------------
# Teardown


@pytest.mark.needs_root
def test_teardown_when_body_raises() -> None:
    names: list[str] = []
    procs: list[subprocess.Popen[str]] = []
    with pytest.raises(RuntimeError, match="boom"):
        with Topology() as topo:
            a, b = topo.add_netns("a"), topo.add_netns("b")
            topo.add_veth(a, b)
            host_end = topo.add_veth(a, None, None, None).name_b  # no host addresses
            procs.append(topo.spawn(a, "sleep", "300"))
            names = [a.name, b.name]
            assert set(names) <= set(list_netns()) and host_end in host_links()
            raise RuntimeError("boom")
    assert not set(names) & set(list_netns())
    assert host_end not in host_links()
    assert procs[0].returncode is not None and not pid_alive(procs[0].pid)
    topo.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        topo.add_netns("c")


def test_spawned_processes_are_killed(topology: Topology) -> None:
    a = topology.add_netns("a")
    topology.kill_timeout = 0.3  # the TERM-ignoring tree below forces the SIGKILL path
    plain = topology.spawn(a, "sleep", "300")
    # Ignores SIGTERM (and so does its child): only SIGKILL of the group ends it.
    stubborn = topology.spawn(a, "sh", "-c", "trap '' TERM; sleep 300 & wait")
    # Leaves our process group: only the sweep of the namespace's pids finds it.
    # (Its output goes to /dev/null: run() waits for EOF on the pipes it captures.)
    topology.run(a, "sh", "-c", "setsid -f sleep 300 >/dev/null 2>&1")
    wait_until(lambda: len(netns_pids(a.name)) >= 4, what="4 processes in the namespace")
    pids = netns_pids(a.name)
    assert plain.pid in pids and stubborn.pid in pids
    topology.close()
    assert plain.returncode is not None and stubborn.returncode == -signal.SIGKILL
    wait_until(lambda: not any(pid_alive(p) for p in pids), what="all processes gone")
    assert a.name not in list_netns()


def test_adopted_process_is_killed(topology: Topology) -> None:
    outsider = subprocess.Popen(["unshare", "-n", "sleep", "300"], start_new_session=True)
    assert topology.adopt(outsider) is outsider
    not_leader = subprocess.Popen(["sleep", "300"])
    try:
        with pytest.raises(ValueError, match="process group leader"):
            topology.adopt(not_leader)
    finally:
        not_leader.kill()
        not_leader.wait()
    topology.close()
    assert outsider.returncode == -signal.SIGTERM


@pytest.mark.needs_root
def test_cleanup_stale_removes_only_dead_owners(topology: Topology) -> None:
    live = topology.add_netns("live")
    pid = dead_pid()
    stale = f"ssc-{pid}-dead-stale"
    # Our own pid but a token no live Topology has: an earlier run with this pid.
    reused = f"ssc-{os.getpid()}-fffff-reused"
    stale_if = f"ssc{pid}h0"
    squatter = None
    try:
        subprocess.run(["ip", "netns", "add", stale], check=True)
        subprocess.run(["ip", "netns", "add", reused], check=True)
        subprocess.run(
            ["ip", "link", "add", stale_if, "type", "veth", "peer", "name", f"ssc{pid}h1"],
            check=True,
        )
        squatter = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "300"], start_new_session=True)
        wait_until(lambda: squatter.pid in netns_pids(stale), what="squatter in namespace")

        cleanup_stale()

        assert stale not in list_netns() and reused not in list_netns()
        assert live.name in list_netns(), "a live owner's namespace must survive"
        assert stale_if not in host_links() and f"ssc{pid}h1" not in host_links()
        assert squatter.wait(timeout=5) == -signal.SIGKILL
    finally:
        if squatter is not None and squatter.poll() is None:
            squatter.kill()
            squatter.wait()
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)
        subprocess.run(["ip", "netns", "delete", reused], capture_output=True)
        subprocess.run(["ip", "link", "delete", stale_if], capture_output=True)


def test_forked_child_leaves_parents_topology_alone(topology: Topology) -> None:
    import topology as topology_module

    a = topology.add_netns("a")
    pid = os.fork()
    if pid == 0:  # child: what its atexit/signal handler would do, then leave at once
        try:
            topology_module._close_all_live()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert a.name in list_netns()


CHILD = """
import json, signal, sys, time
sys.path.insert(0, {tests_dir!r})
mode = sys.argv[1]
# A background job of a non-interactive shell starts with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
if mode == "chained":
    def previous(signum, frame):
        print("previous handler ran", flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, previous)
from topology import Topology
topo = Topology()
a, b = topo.add_netns("a"), topo.add_netns("b")
topo.add_veth(a, b)
p = topo.spawn(a, "sleep", "300")
print(json.dumps({{"netns": [a.name, b.name], "pid": p.pid}}), flush=True)
if mode == "atexit":
    sys.exit(0)
time.sleep(300)
"""


@pytest.mark.needs_root
@pytest.mark.parametrize(
    ("mode", "sig", "expected_rc"),
    [
        ("default", signal.SIGTERM, -signal.SIGTERM),
        ("chained", signal.SIGTERM, 3),
        ("default", signal.SIGHUP, -signal.SIGHUP),
        ("default", signal.SIGINT, -signal.SIGINT),  # KeyboardInterrupt -> atexit
        ("atexit", None, 0),
    ],
)
def test_interrupted_run_cleans_up(mode: str, sig: int | None, expected_rc: int) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(tests_dir=str(TESTS_DIR)), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        line = child.stdout.readline() if ready else ""
        assert line, f"child did not start: {child.stderr.read() if child.poll() else ''}"
        info = json.loads(line)
        if sig is not None:
            assert set(info["netns"]) <= set(list_netns())
            child.send_signal(sig)
        rc = child.wait(timeout=30)
        rest = child.stdout.read()
        assert rc == expected_rc, child.stderr.read()
        if mode == "chained":
            assert "previous handler ran" in rest
        assert not set(info["netns"]) & set(list_netns())
        assert not pid_alive(info["pid"])
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        cleanup_stale()  # the child is dead now: whatever it left is stale


# ---------------------------------------------------------------------------
# conftest rules, run in an inner pytest session


INNER_TESTS = """
import pytest

def test_skips():
    pytest.skip("no frobnicator")

@pytest.mark.xfail(reason="known bug")
def test_xfails():
    assert False

def test_passes():
    pass
"""


def run_inner(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> pytest.RunResult:
    rules = request.config.pluginmanager.get_plugin(RULES_PLUGIN)
    assert rules is not None
    return pytester.runpytest("--strict-markers", "-rs", "-p", "no:cacheprovider", plugins=[rules])


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_ci_turns_skips_into_failures(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    ci: str,
) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(INNER_TESTS)
    result = run_inner(pytester, request)
    result.assert_outcomes(failed=1, passed=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped in CI: no frobnicator*"])


@pytest.mark.parametrize("ci", [None, "false", "0", ""])
def test_skips_stay_skips_outside_ci(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    ci: str | None,
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(INNER_TESTS)
    result = run_inner(pytester, request)
    result.assert_outcomes(skipped=1, passed=1, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize("ci", [True, False])
def test_module_level_skip(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    ci: bool,
) -> None:
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            pytest.skip("whole module off", allow_module_level=True)
            def test_never():
                pass
            """
        )
    )
    result = run_inner(pytester, request)
    if ci:
        assert result.ret != pytest.ExitCode.OK
        result.stdout.fnmatch_lines(["*skipped in CI: whole module off*"])
    else:
        result.assert_outcomes(skipped=1)
        assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.mark.parametrize(("euid", "ci"), [(1000, False), (1000, True), (0, True)])
def test_needs_root_marker(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    euid: int,
    ci: bool,
) -> None:
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            @pytest.mark.needs_root
            def test_root_only():
                pass
            """
        )
    )
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    result = run_inner(pytester, request)
    if euid == 0:
        result.assert_outcomes(passed=1)
    elif not ci:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*needs root*"])
    else:
        # The skip happens during setup, so pytest files the failure as an error.
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*skipped in CI: needs root*"])


@pytest.mark.parametrize("ci", [False, True])
def test_topology_fixture_without_root(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    ci: bool,
) -> None:
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    # The inner session gets the whole conftest (fixture, rules) as a plugin.
    conftest = request.config.pluginmanager.get_plugin(str(TESTS_DIR / "conftest.py"))
    assert conftest is not None
    pytester.makepyfile("def test_uses_topology(topology):\n    topology.add_netns('x')\n")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider", plugins=[conftest])
    if ci:
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*skipped in CI: needs root to create network namespaces*"])
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*needs root to create network namespaces*"])
