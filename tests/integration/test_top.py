"""``sockscope top`` and ``sockscope.traffic``: bytes per process against what the
generators themselves report, in namespaces the tests build.

The suite runs in a namespace of its own (the "host" here); a second namespace
joined to it by a veth pair plays the container, its generator placed in a
cgroup named as Docker names them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from privileges import run_as_nobody
from sockscope.platform import linux
from sockscope.traffic import Sampler, TrafficSample
from topology import Netns, Topology

pytestmark = pytest.mark.needs_root

PEERS = str(Path(__file__).with_name("traffic_peers.py"))
HOST_ADDR, CONTAINER_ADDR = "198.51.100.1", "198.51.100.2"


def _sum_by_pid(samples: list[TrafficSample]) -> dict[int | None, list[int]]:
    totals: dict[int | None, list[int]] = {}
    for sample in samples:
        for row in sample.processes:
            entry = totals.setdefault(row.pid, [0, 0])
            entry[0] += row.tx_bytes
            entry[1] += row.rx_bytes
    return totals


def _netns_of(samples: list[TrafficSample]) -> dict[int | None, set[str]]:
    found: dict[int | None, set[str]] = {}
    for sample in samples:
        for row in sample.processes:
            if row.tx_bytes or row.rx_bytes:
                found.setdefault(row.pid, set()).add(row.netns)
    return found


def _sample_until_done(sampler: Sampler, procs: list[subprocess.Popen[str]],
                       timeout: float = 40.0) -> list[TrafficSample]:
    """A sample a second while the generators run, and one after they ended."""
    samples: list[TrafficSample] = []
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline, "generators did not finish"
        time.sleep(1.0)
        samples.append(sampler.collect())
    time.sleep(0.3)  # the last destroy messages
    samples.append(sampler.collect())
    return samples


def _within(measured: int, expected: int, tolerance: float = 0.02) -> bool:
    return abs(measured - expected) <= tolerance * expected


@pytest.fixture
def net(topology: Topology) -> Netns:
    """A "container" namespace joined to the suite's own by a veth pair."""
    container = topology.add_netns("container")
    topology.add_veth(container, None, f"{CONTAINER_ADDR}/30", f"{HOST_ADDR}/30")
    return container


@pytest.fixture
def docker_cgroup(tmp_path: Path) -> Iterator[Path]:
    """A cgroup (v2) named as Docker names a container's, removed afterwards.

    Under ``ip netns exec`` (the suite's sandbox) /sys is a fresh sysfs with no
    cgroup file system mounted: one is mounted for the test then.
    """
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
              if line.split()[2] == "cgroup2"]
    mounted = None
    if mounts:
        root = Path(mounts[0])
    else:
        mounted = root = tmp_path / "cgroup2"
        root.mkdir()
        subprocess.run(["mount", "-t", "cgroup2", "none", str(root)], check=True)
    path = root / f"docker-{secrets.token_hex(32)}.scope"
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (root / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        path.rmdir()
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=True)


def _iperf3_server(topology: Topology, ns: Netns | None, addr: str, port: int) -> subprocess.Popen[str]:
    cmd = ["iperf3", "-s", "-1", "-B", addr, "-p", str(port)]
    proc = (topology.spawn(ns, *cmd, stdout=subprocess.DEVNULL) if ns is not None
            else topology.adopt(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                                 text=True, start_new_session=True)))
    listening = ["ss", "-Htln", f"sport = :{port}"]
    for _ in range(100):
        if ns is None:
            out = subprocess.run(listening, capture_output=True, text=True, check=False)
        else:
            out = topology.run(ns, *listening)
        if out.stdout.strip():
            return proc
        time.sleep(0.05)
    raise AssertionError(f"iperf3 server on port {port} did not start")


def test_iperf3_tcp_per_process_in_both_namespaces_within_2_percent(
        topology: Topology, net: Netns, docker_cgroup: Path) -> None:
    up = _iperf3_server(topology, None, HOST_ADDR, 5201)  # the host receives from the container
    down = _iperf3_server(topology, net, CONTAINER_ADDR, 5202)  # the container receives from the host
    # The two namespaces by name: on a host where other loads hold many sockets, the
    # every-namespace default would make each collection slow (the /proc walk), and a
    # client that finished between two would be credited to its server's listener.
    sampler = Sampler([str(os.getpid()), net.name])
    try:
        from_container = topology.spawn(net, "iperf3", "-J", "-c", HOST_ADDR, "-p", "5201",
                                        "-t", "10", "-b", "200M")
        (docker_cgroup / "cgroup.procs").write_text(str(from_container.pid))
        from_host = topology.adopt(subprocess.Popen(
            ["iperf3", "-J", "-c", CONTAINER_ADDR, "-p", "5202", "-t", "10", "-b", "100M"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True))
        samples = _sample_until_done(sampler, [from_container, from_host])
    finally:
        sampler.close()
    reports = {p.pid: json.loads(p.communicate()[0])["end"] for p in (from_container, from_host)}
    totals = _sum_by_pid(samples)
    namespaces = _netns_of(samples)
    for client, server in ((from_container, up), (from_host, down)):
        sent = reports[client.pid]["sum_sent"]["bytes"]
        received = reports[client.pid]["sum_received"]["bytes"]  # as the server reported it
        assert _within(totals[client.pid][0], sent), (client.args, totals[client.pid], sent)
        assert _within(totals[server.pid][1], received), (server.args, totals[server.pid], received)
    assert namespaces[from_container.pid] == {net.name} == namespaces[down.pid]
    here = {row.netns for s in samples for row in s.processes if row.pid == from_host.pid}
    assert here and net.name not in here and here == namespaces[up.pid]
    containers = {row.container for s in samples for row in s.processes if row.pid == from_container.pid}
    assert containers == {f"docker:{docker_cgroup.name[7:19]}"}


def test_500_short_connections_counted_within_2_percent(topology: Topology, net: Netns) -> None:
    sink = topology.spawn(net, sys.executable, PEERS, "sink", CONTAINER_ADDR, "5300")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    sampler = Sampler([str(os.getpid()), net.name])
    try:
        burst = topology.adopt(subprocess.Popen(
            [sys.executable, PEERS, "burst", CONTAINER_ADDR, "5300", "500", "100000"],
            stdout=subprocess.PIPE, text=True, start_new_session=True))
        samples = _sample_until_done(sampler, [burst])
    finally:
        sampler.close()
    expected = 500 * 100_000
    sent = sum(r.tx_bytes for s in samples for r in s.processes if r.netns != net.name)
    received = sum(r.rx_bytes for s in samples for r in s.processes if r.pid == sink.pid)
    assert _within(sent, expected), sent
    assert _within(received, expected), received  # accepted unseen: credited to the listener's holder


@pytest.mark.parametrize("mode", ["fdpass", "fork"])
def test_shared_and_passed_sockets_credit_the_process_that_holds_them(
        topology: Topology, net: Netns, mode: str) -> None:
    sink = topology.spawn(net, sys.executable, PEERS, "sink", CONTAINER_ADDR, "5301")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    size = 3_000_000
    sampler = Sampler([str(os.getpid()), net.name])
    try:
        steps = topology.adopt(subprocess.Popen(
            [sys.executable, PEERS, "steps", CONTAINER_ADDR, "5301", mode, str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True))
        assert steps.stdin is not None and steps.stdout is not None

        def say(command: str) -> int:
            assert steps.stdin is not None and steps.stdout is not None
            steps.stdin.write(command + "\n")
            steps.stdin.flush()
            return int(steps.stdout.readline())

        time.sleep(0.3)
        sampler.collect()
        first = say("send")
        time.sleep(0.3)
        before = sampler.collect()
        child = say("handoff")
        time.sleep(0.3)
        sampler.collect()
        second = say("send")
        time.sleep(0.3)
        after = sampler.collect()
        steps.stdin.close()
        steps.wait(timeout=10)
    finally:
        sampler.close()
    assert first == steps.pid and second == child
    by_pid = _sum_by_pid([before])
    assert _within(by_pid[first][0], size)
    rows = [c for c in after.connections if c.remote_port == 5301]
    assert len(rows) == 1 and rows[0].pid == child and _within(rows[0].tx_bytes, size)
    assert rows[0].holders == (1 if mode == "fdpass" else 2)


def _udp_both_ways(topology: Topology, net: Netns, sampler: Sampler, port: int, rate: int,
                   seconds: int) -> None:
    """``rate`` datagrams/s of 1,000 bytes for ``seconds`` each way: from the container
    to a sink here, and from here to a sink in the container, sampled by ``sampler``
    (closed here); each process's bytes against its own count, each on the row of
    its own namespace, all of it UDP."""
    try:
        sink_here = topology.adopt(subprocess.Popen(
            [sys.executable, PEERS, "udp-sink", HOST_ADDR, str(port)], stdout=subprocess.PIPE,
            text=True, start_new_session=True))
        sink_there = topology.spawn(net, sys.executable, PEERS, "udp-sink", CONTAINER_ADDR, str(port + 1))
        for sink in (sink_here, sink_there):
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        load = [str(rate), str(seconds), "1000"]
        from_container = topology.spawn(net, sys.executable, PEERS, "udp-send", HOST_ADDR, str(port), *load)
        from_host = topology.adopt(subprocess.Popen(
            [sys.executable, PEERS, "udp-send", CONTAINER_ADDR, str(port + 1), *load],
            stdout=subprocess.PIPE, text=True, start_new_session=True))
        procs = [from_container, from_host, sink_here, sink_there]
        samples = _sample_until_done(sampler, procs)
    finally:
        sampler.close()
    counts = {p.pid: int(p.communicate()[0].split()[-1]) for p in procs}
    # The generators kept the rate.
    assert all(n >= 0.95 * rate * seconds * 1000 for n in counts.values()), counts
    totals = _sum_by_pid(samples)
    for sender, sink in ((from_container, sink_here), (from_host, sink_there)):
        assert _within(totals[sender.pid][0], counts[sender.pid]), (totals[sender.pid], counts)
        assert _within(totals[sink.pid][1], counts[sink.pid]), (totals[sink.pid], counts)
    namespaces = _netns_of(samples)
    assert namespaces[from_container.pid] == {net.name} == namespaces[sink_there.pid]
    here = namespaces[from_host.pid]
    assert here == namespaces[sink_here.pid] and net.name not in here
    udp = [r for s in samples for r in s.processes if r.pid in counts]
    assert udp and all(set(r.by_proto) == {"udp"} for r in udp)


def test_udp_at_a_fixed_packet_rate_per_process_in_both_directions_within_2_percent(
        topology: Topology, net: Netns) -> None:
    """2,000 datagrams/s for 10 s each way, the bpf source, every namespace."""
    sampler = Sampler()  # every namespace, as top does by default
    assert sampler.source == "bpf", sampler.collect().notes
    _udp_both_ways(topology, net, sampler, 5401, 2000, 10)


def test_forwarded_frames_and_ping_have_rows_of_their_own(topology: Topology) -> None:
    """A namespace routing UDP between two others shows it as an ``unowned`` row
    (frames no socket of it sent), the sender and the sink as their UDP; ping's
    ICMP is on its own process row."""
    a, router, b = topology.add_netns("fa"), topology.add_netns("fr"), topology.add_netns("fb")
    topology.add_veth(a, router, "192.0.2.1/30", "192.0.2.2/30")
    topology.add_veth(router, b, "192.0.2.5/30", "192.0.2.6/30")
    topology.run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    topology.run(a, "ip", "route", "add", "192.0.2.4/30", "via", "192.0.2.2")
    topology.run(b, "ip", "route", "add", "192.0.2.0/30", "via", "192.0.2.5")
    sink = topology.spawn(b, sys.executable, PEERS, "udp-sink", "192.0.2.6", "5403")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    sampler = Sampler([a.name, router.name, b.name])
    try:
        sender = topology.spawn(a, sys.executable, PEERS, "udp-send", "192.0.2.6", "5403", "1000", "3",
                                "1000")
        ping = topology.spawn(a, "ping", "-n", "-q", "-c", "5", "-i", "0.2", "192.0.2.2",
                              stdout=subprocess.DEVNULL)
        samples = _sample_until_done(sampler, [sender, sink, ping])
    finally:
        sampler.close()
    sent = int(sender.communicate()[0].split()[-1])
    rows = [row for s in samples for row in s.processes]
    forwarded = sum(r.tx_bytes for r in rows if r.kind == "unowned" and r.netns == router.name)
    # Each datagram leaves the router as one frame: payload + UDP 8 + IPv4 20 + Ethernet 14.
    assert _within(forwarded, sent // 1000 * (1000 + 42)), (forwarded, sent)
    assert all(r.pid is None and r.by_proto.keys() == {"forwarded"} for r in rows if r.kind == "unowned")
    assert _within(sum(r.tx_bytes for r in rows if r.pid == sender.pid), sent)
    icmp = [r.by_proto["icmp"] for r in rows if r.pid == ping.pid and "icmp" in r.by_proto]
    # 5 echo requests of 64 bytes (8 of ICMP header, 56 of data); the replies read back.
    assert sum(b.tx_bytes for b in icmp) == 5 * 64 and sum(b.rx_bytes for b in icmp) >= 5 * 64


def test_the_capture_source_counts_udp_both_ways_within_2_percent(topology: Topology, net: Netns) -> None:
    """The fallback where eBPF may not run: UDP from a capture of each namespace,
    1,000 datagrams/s for 4 s each way."""
    sampler = Sampler([str(os.getpid()), net.name], source="capture")
    assert sampler.source == "capture"
    assert any("source: capture" in n for n in sampler.collect().notes)
    _udp_both_ways(topology, net, sampler, 5411, 1000, 4)


def test_counters_source_counts_tcp_only_and_says_so(topology: Topology, net: Netns) -> None:
    with Sampler(net.name, source="counters") as sampler:
        assert sampler.source == "counters"
        sample = sampler.collect()
    assert sample.source == "counters" and any("UDP" in n and "not counted" in n for n in sample.notes)
    bad = _top("--once", "--source", "pcap")
    assert bad.returncode == 2 and bad.stderr.count("\n") <= 2


def test_a_process_that_exits_keeps_its_last_bytes(topology: Topology, net: Netns) -> None:
    sink = topology.spawn(net, sys.executable, PEERS, "sink", CONTAINER_ADDR, "5302")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    sampler = Sampler([str(os.getpid()), net.name])
    try:
        burst = topology.adopt(subprocess.Popen(
            [sys.executable, PEERS, "burst", CONTAINER_ADDR, "5302", "1", "20000000"],
            stdout=subprocess.PIPE, text=True, start_new_session=True))
        burst.wait(timeout=30)
        time.sleep(0.3)
        sample = sampler.collect()
    finally:
        sampler.close()
    sent = sum(r.tx_bytes for r in sample.processes if r.netns != net.name)
    assert _within(sent, 20_000_000)


def test_pid_narrows_the_namespaces_read_and_a_named_one_deleted_ends_it(
        topology: Topology, net: Netns) -> None:
    sink = topology.spawn(net, sys.executable, PEERS, "sink", CONTAINER_ADDR, "5304")
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    with Sampler(pid=sink.pid) as sampler:
        assert sampler.namespaces == [net.name]  # not every namespace on the host
    doomed = topology.add_netns("doomed")
    sampler = Sampler(doomed.name)
    try:
        subprocess.run(["ip", "netns", "delete", doomed.name], check=True)
        assert f"network namespace {doomed.name} has gone" in sampler.collect().notes
        with pytest.raises(linux.NetnsGone, match=f"{doomed.name} has gone"):
            sampler.collect()
    finally:
        sampler.close()


def _top(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sockscope", "top", *args], capture_output=True,
                          text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


def test_jsonl_once_and_schema(topology: Topology, net: Netns) -> None:
    down = _iperf3_server(topology, net, CONTAINER_ADDR, 5203)
    client = topology.adopt(subprocess.Popen(
        ["iperf3", "-c", CONTAINER_ADDR, "-p", "5203", "-t", "30", "-b", "50M"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    time.sleep(0.5)
    done = _top("--jsonl", "--interval", "0.5", "--count", "2", "-N", net.name)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    for sample in lines:
        assert {"time", "interval", "processes", "connections", "remotes", "source"} <= set(sample)
        assert 0.4 < sample["interval"] < 2.0
        for row in sample["processes"]:
            assert {"pid", "command", "user", "netns", "container", "connections", "tx_bytes",
                    "rx_bytes", "tx_rate", "rx_rate", "by_proto"} <= set(row)
            assert row["netns"] == net.name  # -N narrows
    receiving = [r for s in lines for r in s["processes"] if r["pid"] == down.pid]
    assert receiving and all(r["by_proto"]["tcp"]["rx_bytes"] > 0 for r in receiving)
    once = _top("--once", "-d", "0.5", "--pid", str(down.pid))
    assert once.returncode == 0, once.stderr
    header, *rows = once.stdout.splitlines()
    assert header.split()[:3] == ["PID", "User", "Command"]
    assert len(rows) == 1 and rows[0].split()[0] == str(down.pid) and "iperf3" in rows[0]
    client.kill()
    client.wait()


def test_errors_are_one_line() -> None:
    bad = _top("--once", "sport", "=", ":htp")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot parse filter" in bad.stderr
    piped = _top(stdin=subprocess.DEVNULL)
    assert piped.returncode == 2 and "--jsonl" in piped.stderr and piped.stderr.count("\n") == 1
    status, err = run_as_nobody(["top", "--once"], preload=["sockscope.traffic"])
    assert status == 1 and err.count("\n") == 1 and "needs root" in err, err


def test_capabilities_not_uid_decide() -> None:
    """A service holding the capabilities, not root, may account (the exporter's
    systemd unit); root without one of them is told which."""
    caps = "+sys_admin,+sys_ptrace,+dac_read_search"  # dac_read_search: the venv under /root
    as_service = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
         f"--ambient-caps={caps}", sys.executable, "-m", "sockscope", "top", "--once", "-d", "0.2",
         "-N", str(os.getpid())],
        capture_output=True, text=True, timeout=60)
    assert as_service.returncode == 0 and as_service.stdout.split()[:1] == ["PID"], as_service.stderr
    no_ptrace = subprocess.run(
        ["setpriv", "--bounding-set=-sys_ptrace", sys.executable, "-m", "sockscope", "top", "--once"],
        capture_output=True, text=True, timeout=60)
    err = no_ptrace.stderr
    assert no_ptrace.returncode == 1 and err.count("\n") == 1 and "CAP_SYS_PTRACE" in err, err


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", _TMUX_SOCKET, *args], capture_output=True, text=True,
                          check=True, timeout=10).stdout


_TMUX_SOCKET = f"ssc-top-{os.getpid()}"


def _screen_until(text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = _tmux("capture-pane", "-p", "-t", "top")
        if text in screen or time.monotonic() > deadline:
            return screen
        time.sleep(0.2)


def test_live_view_in_tmux_shows_the_generator_and_leaves_a_clean_terminal(
        topology: Topology, net: Netns) -> None:
    assert shutil.which("tmux"), "tmux is installed by scripts/setup.sh --test"
    down = _iperf3_server(topology, net, CONTAINER_ADDR, 5204)
    client = topology.adopt(subprocess.Popen(
        ["iperf3", "-c", CONTAINER_ADDR, "-p", "5204", "-t", "20", "-b", "80M"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    script = (f"{sys.executable} -m sockscope top -d 0.5 -N {net.name}; echo EXIT=$?; stty -a | tr ' ' '\\n' "
              "| grep -x -e echo -e icanon | tr '\\n' ' '; echo; sleep 60")
    _tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "30", "sh", "-c", script)
    try:
        screen = _screen_until(f"{down.pid} root iperf3")
        lines = [line for line in screen.splitlines() if f" {down.pid} " in f" {line} "]
        assert lines and "iperf3" in lines[0] and "MiB/s" in lines[0], screen
        assert "q quit" in screen
        _tmux("resize-window", "-t", "top", "-x", "100", "-y", "20")
        screen = _screen_until("iperf3")
        assert "sockscope top" in screen and len(screen.splitlines()[0]) <= 100
        _tmux("send-keys", "-t", "top", "2")  # per-connection rows
        screen = _screen_until("ESTABLISHED")
        assert f"{CONTAINER_ADDR}:5204" in screen, screen
        _tmux("send-keys", "-t", "top", "q")
        screen = _screen_until("EXIT=")
        assert "EXIT=0" in screen and {"echo", "icanon"} <= set(screen.split()), screen
        assert "sockscope top" not in screen and "q quit" not in screen  # the screen was restored
    finally:
        subprocess.run(["tmux", "-L", _TMUX_SOCKET, "kill-server"], capture_output=True, check=False)
        client.kill()
        client.wait()
