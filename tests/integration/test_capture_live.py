"""Live capture over veth pairs in namespaces the tests build: the API, the CLI, the
files it writes (checked with tcpdump and tshark), counters, signals and bad input."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import sockscope
from privileges import run_as_nobody
from sockscope.capture.engine import Capture, CaptureError
from sockscope.packets import UDP, Dot1Q, IPv4
from sockscope.pcap import open_reader
from sockscope.platform.linux import in_netns, resolve_netns

pytestmark = pytest.mark.needs_root

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))
A_ADDR, B_ADDR = "198.51.100.1", "198.51.100.2"


class Pair:
    def __init__(self, topology: Any) -> None:
        self.topo = topology
        self.a = topology.add_netns("a")
        self.b = topology.add_netns("b")
        veth = topology.add_veth(self.a, self.b, f"{A_ADDR}/24", f"{B_ADDR}/24")
        self.if_a, self.if_b = veth.name_a, veth.name_b
        # Static neighbours: no ARP in the captures, no wait for resolution.
        mac_a = topology.run(self.a, "cat", f"/sys/class/net/{self.if_a}/address").stdout.strip()
        mac_b = topology.run(self.b, "cat", f"/sys/class/net/{self.if_b}/address").stdout.strip()
        topology.run(self.a, "ip", "neigh", "replace", B_ADDR, "lladdr", mac_b, "dev", self.if_a)
        topology.run(self.b, "ip", "neigh", "replace", A_ADDR, "lladdr", mac_a, "dev", self.if_b)

    def udp_from_a(self, port: int, n: int = 1, payload: bytes = b"ping") -> None:
        with in_netns(resolve_netns(self.a.name)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            for _ in range(n):
                s.sendto(payload, (B_ADDR, port))

    def capture_cli(self, *args: str, ns: str | None = None) -> subprocess.Popen[str]:
        cmd = [SOCKSCOPE, "capture", "-N", ns or self.b.name, *args]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self.topo.adopt(proc)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on" in line, line + proc.stderr.read()
        return proc


@pytest.fixture
def pair(topology: Any) -> Pair:
    return Pair(topology)


def _finish(
    proc: subprocess.Popen[str], sig: int | None = signal.SIGINT, timeout: float = 10
) -> tuple[str, str]:
    if sig is not None:
        time.sleep(0.1)
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return out, err


def _counters(err: str) -> tuple[int, int, int]:
    """(captured, received by filter, dropped by kernel) from tcpdump-style counters."""
    values = {}
    for line in err.splitlines():
        for key in ("captured", "received by filter", "dropped by kernel"):
            if line.endswith("packets " + key):
                values[key] = int(line.split()[0])
    assert len(values) == 3, err
    return values["captured"], values["received by filter"], values["dropped by kernel"]


# -- API ------------------------------------------------------------------------------


def test_api_iterates_filtered_packets_with_metadata(pair: Pair) -> None:
    with sockscope.capture(pair.if_b, "udp port 5555", netns=pair.b.name, count=3, duration=5) as cap:
        threading.Timer(0.2, pair.udp_from_a, (5555, 3)).start()
        threading.Timer(0.2, pair.udp_from_a, (6666, 3)).start()
        pkts = list(cap)
        stats = cap.statistics()
    assert len(pkts) == 3
    for p in pkts:
        assert p.interface == pair.if_b and p.direction == "in"
        assert p[UDP].dport == 5555 and p[IPv4].src_ip == A_ADDR
        assert p.wirelen == len(p.data) and p.timestamp_ns > 1.7e18
        assert p.summary() == f"IP {A_ADDR}.{p[UDP].sport} > {B_ADDR}.5555: UDP, length 4"
    assert stats[0].received == 3 and stats[0].dropped == 0


def test_api_async_iterator(pair: Pair) -> None:
    async def main() -> list[Any]:
        with Capture(pair.if_b, "udp port 5556", netns=pair.b.name, count=2, duration=5) as cap:
            asyncio.get_running_loop().call_later(0.2, pair.udp_from_a, 5556, 2)
            return [p async for p in cap]

    pkts = asyncio.run(main())
    assert [p[UDP].dport for p in pkts] == [5556, 5556]


def test_no_unfiltered_packet_leaks_in_at_start(pair: Pair) -> None:
    """Traffic that fails the filter runs while captures open and close repeatedly."""
    stop = threading.Event()

    def blast() -> None:
        with in_netns(resolve_netns(pair.a.name)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            while not stop.is_set():
                for _ in range(50):
                    s.sendto(b"noise", (B_ADDR, 9))
                s.sendto(b"signal", (B_ADDR, 7777))
                time.sleep(0.0005)

    t = threading.Thread(target=blast)
    t.start()
    seen = 0
    try:
        for _ in range(20):
            with Capture(pair.if_b, "udp port 7777", netns=pair.b.name, duration=0.05) as cap:
                for p in cap:
                    assert p[UDP].dport == 7777, p.summary()
                    seen += 1
    finally:
        stop.set()
        t.join()
    assert seen > 0


def test_fanout_spreads_packets_over_the_group(pair: Pair) -> None:
    caps = [Capture(pair.if_b, "udp", netns=pair.b.name, fanout=(4242, "lb")) for _ in range(2)]
    try:
        for port in range(7000, 7040):
            pair.udp_from_a(port)
        time.sleep(0.1)
        counts = [sum(len(frames) for _, frames in cap.poll(0.5)) for cap in caps]
    finally:
        for cap in caps:
            cap.close()
    assert sum(counts) == 40 and all(c > 0 for c in counts), counts


def test_vlan_tag_is_put_back_into_the_frame(pair: Pair) -> None:
    """The receiving kernel moves a frame's 802.1Q tag into packet metadata
    (TP_STATUS_VLAN_VALID); the capture must show the frame as it was on the wire."""
    from sockscope.capture import send_frame
    from sockscope.packets import Ethernet, stack

    frame = stack(
        Ethernet.build(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff"),
        Dot1Q.build(tci=(3 << 13) | 10),
        IPv4.build(src=A_ADDR, dst=B_ADDR),
        UDP.build(sport=1, dport=4000),
        payload=b"tagged",
    )
    # The kernel filters the frame as it sees it, untagged: "udp port" matches.
    with Capture(pair.if_b, "udp port 4000", netns=pair.b.name, duration=3, count=1) as cap:
        threading.Timer(0.2, send_frame, (pair.if_a, frame, pair.a.name)).start()
        pkts = list(cap)
    assert len(pkts) == 1
    assert pkts[0].data == frame and pkts[0].wirelen == len(frame)
    assert pkts[0][Dot1Q].vlan == 10 and pkts[0][Dot1Q].priority == 3 and pkts[0][UDP].dport == 4000


def test_direction_out_only(pair: Pair) -> None:
    with Capture(pair.if_a, "udp", netns=pair.a.name, direction="out", duration=1) as cap:
        threading.Timer(0.2, pair.udp_from_a, (5557, 2)).start()
        pkts = list(cap)
    assert len(pkts) == 2 and all(p.direction == "out" for p in pkts)
    with Capture(pair.if_a, "udp", netns=pair.a.name, direction="in", duration=0.8) as cap:
        threading.Timer(0.2, pair.udp_from_a, (5557, 2)).start()
        assert list(cap) == []


def test_any_interface_is_cooked_and_filters_in_kernel(pair: Pair) -> None:
    with Capture("any", "udp port 5558", netns=pair.b.name, count=2, duration=5) as cap:
        threading.Timer(0.2, pair.udp_from_a, (5558, 2)).start()
        pkts = list(cap)
        assert cap.linktype == 113
    assert [p.interface for p in pkts] == [pair.if_b, pair.if_b]
    assert all(p[UDP].dport == 5558 for p in pkts)


def test_interface_going_away_ends_the_capture_with_a_clear_error(pair: Pair, topology: Any) -> None:
    cap = Capture(pair.if_b, "", netns=pair.b.name)
    try:
        topology.run(pair.b, "ip", "link", "del", pair.if_b)
        with pytest.raises(CaptureError, match=f"interface {pair.if_b} went down"):
            for _ in range(20):
                cap.poll(0.2)
    finally:
        cap.close()


# -- CLI ------------------------------------------------------------------------------


def test_cli_prints_tcpdump_style_lines_and_counters(pair: Pair) -> None:
    proc = pair.capture_cli("-i", pair.if_b, "-c", "2", "udp", "port", "5559")
    pair.udp_from_a(5559, 3, b"hello")
    out, err = _finish(proc, None)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    pattern = rf"\d\d:\d\d:\d\d\.\d{{6}} {pair.if_b} In  IP {A_ADDR}\.\d+ > {B_ADDR}\.5559: UDP, length 5"
    for line in lines:
        assert re.fullmatch(pattern, line), line
    assert (
        "2 packets captured" in err and "received by filter" in err and "0 packets dropped by kernel" in err
    )


@pytest.mark.parametrize("name", ["out.pcap", "out.pcapng"])
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_cli_file_is_complete_after_signal_and_opens_in_tcpdump_and_tshark(
    pair: Pair, tmp_path: Path, name: str, stop: int
) -> None:
    path = tmp_path / name
    proc = pair.capture_cli("-i", pair.if_b, "-w", str(path), "udp port 5560")
    pair.udp_from_a(5560, 25)
    _out, err = _finish(proc, stop)
    assert proc.returncode == 0, err
    assert "25 packets captured" in err
    td = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert td.returncode == 0, td.stderr
    assert len(td.stdout.splitlines()) == 25
    ts = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "udp.dstport"], capture_output=True, text=True
    )
    assert ts.returncode == 0 and ts.stdout.split() == ["5560"] * 25, ts.stderr
    with open_reader(path) as reader:
        assert len(list(reader)) == 25
        if name.endswith("pcapng"):
            assert reader.interfaces[0].name == pair.if_b and reader.interfaces[0].filter == "udp port 5560"
            assert reader.statistics and reader.statistics[-1].usrdeliv == 25
            assert reader.statistics[-1].osdrop == 0


def test_cli_two_interfaces_into_one_pcapng(pair: Pair, tmp_path: Path) -> None:
    path = tmp_path / "two.pcapng"
    proc = pair.capture_cli("-i", pair.if_b, "-i", "lo", "-w", str(path), "udp")
    pair.udp_from_a(5561, 2)
    with in_netns(resolve_netns(pair.b.name)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.sendto(b"x", ("127.0.0.1", 5562))
    _out, err = _finish(proc)
    assert proc.returncode == 0, err
    ts = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name", "-e", "udp.dstport"],
        capture_output=True,
        text=True,
    )
    rows = sorted(tuple(line.split("\t")) for line in ts.stdout.splitlines())
    assert rows == sorted([("lo", "5562"), (pair.if_b, "5561"), (pair.if_b, "5561")]), ts.stderr
    td = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert td.returncode == 0 and len(td.stdout.splitlines()) == 3, td.stderr


def test_kernel_drops_are_counted_printed_and_recorded(pair: Pair, tmp_path: Path) -> None:
    path = tmp_path / "drops.pcapng"
    proc = pair.capture_cli("-i", pair.if_b, "-B", "64", "-w", str(path), "udp port 5563")
    os.kill(proc.pid, signal.SIGSTOP)  # a consumer that does not read: the ring fills
    try:
        pair.udp_from_a(5563, 3000, bytes(600))
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _out, err = _finish(proc)
    captured, received, dropped = _counters(err)
    assert dropped > 0 and received == captured + dropped and captured > 0, err
    with open_reader(path) as reader:
        n = len(list(reader))
        assert reader.statistics[-1].osdrop == dropped
    assert n == captured


def test_sigusr1_prints_counters_and_goes_on(pair: Pair) -> None:
    proc = pair.capture_cli("-i", pair.if_b, "udp port 5564")
    pair.udp_from_a(5564, 2)
    time.sleep(0.3)
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.3)
    pair.udp_from_a(5564, 1)
    out, err = _finish(proc)
    assert err.count("packets captured") == 2, err
    assert "2 packets captured" in err and "3 packets captured" in err
    assert len(out.splitlines()) == 3


def test_cli_rotation_by_size_keeps_every_file_valid(pair: Pair, tmp_path: Path) -> None:
    base = tmp_path / "rot.pcap"
    proc = pair.capture_cli("-i", pair.if_b, "-w", str(base), "-C", "0.01", "-W", "3", "udp port 5565")
    pair.udp_from_a(5565, 200, bytes(200))  # ~48 kB: more than 3 files of 10 kB, so the ring wraps
    _out, err = _finish(proc)
    assert proc.returncode == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["rot.pcap0", "rot.pcap1", "rot.pcap2"]
    for f in files:
        td = subprocess.run(["tcpdump", "-nr", str(tmp_path / f)], capture_output=True, text=True)
        assert td.returncode == 0 and td.stdout, td.stderr


def test_cli_json_lines(pair: Pair) -> None:
    import json

    proc = pair.capture_cli("-i", pair.if_b, "-c", "1", "--jsonl", "-v", "udp port 5566")
    pair.udp_from_a(5566, 1)
    out, _err = _finish(proc, None)
    record = json.loads(out)
    assert record["interface"] == pair.if_b and record["direction"] == "in"
    assert [layer["name"] for layer in record["layers"]] == ["Ethernet", "IPv4", "UDP"]
    assert record["layers"][1]["src"] == A_ADDR and record["layers"][2]["dport"] == 5566


def test_relinquish_privileges_after_opening(pair: Pair, shared_dir: Path) -> None:
    import pwd

    shared_dir.chmod(0o777)  # nobody creates the file once root is dropped
    path = shared_dir / "z.pcap"
    proc = pair.capture_cli("-i", pair.if_b, "-Z", "nobody", "-w", str(path), "udp port 5567")
    pair.udp_from_a(5567, 2)
    _out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert path.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    with open_reader(path) as reader:
        assert len(list(reader)) == 2


def test_cli_interface_removed_mid_capture(pair: Pair, topology: Any, tmp_path: Path) -> None:
    path = tmp_path / "gone.pcap"
    proc = pair.capture_cli("-i", pair.if_b, "-w", str(path), "udp port 5568")
    pair.udp_from_a(5568, 3)
    time.sleep(0.2)
    topology.run(pair.b, "ip", "link", "del", pair.if_b)
    _out, err = _finish(proc, None)
    assert proc.returncode == 1
    assert f"interface {pair.if_b} went down" in err and "Traceback" not in err
    td = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert td.returncode == 0 and len(td.stdout.splitlines()) == 3, td.stderr


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["-i", "nosuch0"], 2, "no such interface: nosuch0"),
        (["-i", "lo", "udp", "port"], 2, "syntax error"),
        (["-i", "lo", "-s", "300000"], 2, "snapshot length"),
        (["-i", "lo", "--fanout", "x"], 2, "--fanout"),
        (["-i", "lo", "-C", "1"], 2, "need -w"),
    ],
)
def test_cli_bad_input(argv: list[str], status: int, message: str) -> None:
    proc = subprocess.run([SOCKSCOPE, "capture", *argv], capture_output=True, text=True, timeout=20)
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_without_cap_net_raw_says_so() -> None:
    code, err = run_as_nobody(["capture", "-i", "lo", "-c", "1"], preload=["sockscope.cli.capture_live"])
    assert code == 1, err
    assert err.strip() == "sockscope capture: capture needs CAP_NET_RAW (run as root)"


# -- send -----------------------------------------------------------------------------


def test_send_replays_a_file_frame_for_frame(pair: Pair, tmp_path: Path) -> None:
    from sockscope.packets import Ethernet, stack
    from sockscope.pcap import PcapWriter, Record

    mac_b = pair.topo.run(pair.b, "cat", f"/sys/class/net/{pair.if_b}/address").stdout.strip()
    frames = [
        stack(
            Ethernet.build(src="02:00:00:00:00:01", dst=mac_b),
            IPv4.build(src=A_ADDR, dst=B_ADDR),
            UDP.build(sport=1000 + i, dport=5569),
            payload=b"replayed %d" % i,
        )
        for i in range(5)
    ]
    src = tmp_path / "in.pcap"
    with PcapWriter(src, 1) as w:
        for i, f in enumerate(frames):
            w.write(Record(1_700_000_000_000_000_000 + i * 10_000_000, f, len(f)))
    with Capture(pair.if_b, "udp port 5569", netns=pair.b.name, count=5, duration=5) as cap:
        sender = subprocess.run(
            [SOCKSCOPE, "send", "-N", pair.a.name, "-i", pair.if_a, str(src)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        got = [p.data for p in cap]
    assert sender.returncode == 0, sender.stderr
    assert "Actual: 5 packets" in sender.stdout
    assert got == frames


def test_cli_duration_ends_with_a_complete_pcapng(pair: Pair, tmp_path: Path) -> None:
    path = tmp_path / "timed.pcapng"
    proc = pair.capture_cli("-i", pair.if_b, "--duration", "1", "-w", str(path), "udp port 5570")
    pair.udp_from_a(5570, 4)
    _out, err = _finish(proc, None)
    assert proc.returncode == 0, err
    td = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert td.returncode == 0 and len(td.stdout.splitlines()) == 4, td.stderr
    with open_reader(path) as reader:
        list(reader)
        assert reader.statistics[-1].usrdeliv == 4


_UDP_SERVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
time.sleep(60)
"""


def test_owners_name_the_receiving_process(pair: Pair, tmp_path: Path) -> None:
    import json

    server = pair.topo.spawn(pair.b, sys.executable, "-c", _UDP_SERVER, "5571")
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    # The server runs under `ip netns exec`, which execs python: same pid.
    proc = pair.capture_cli("-i", pair.if_b, "-c", "2", "--owners", "--jsonl", "udp port 5571")
    pair.udp_from_a(5571, 2)
    out, err = _finish(proc, None)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2
    for record in records:
        assert [o["pid"] for o in record["owners"]] == [server.pid]
    path = tmp_path / "owned.pcapng"
    proc = pair.capture_cli("-i", pair.if_b, "-c", "1", "--owners", "-w", str(path), "udp port 5571")
    pair.udp_from_a(5571, 1)
    _out, err = _finish(proc, None)
    assert proc.returncode == 0, err
    fields = ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.comment"]
    ts = subprocess.run(fields, capture_output=True, text=True)
    assert ts.stdout.strip().startswith(f"pid {server.pid} python"), (ts.stdout, ts.stderr)
    bad = subprocess.run([SOCKSCOPE, "capture", "-N", pair.b.name, "-i", pair.if_b, "--owners", "-w",
                          str(tmp_path / "x.pcap")], capture_output=True, text=True, timeout=20)  # fmt: skip
    assert bad.returncode == 2 and "needs a pcapng file" in bad.stderr


@pytest.mark.parametrize("name", ["count.pcap", "count.pcapng"])
def test_cli_count_ends_with_a_complete_file(pair: Pair, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    proc = pair.capture_cli("-i", pair.if_b, "-c", "3", "-w", str(path), "udp port 5572")
    pair.udp_from_a(5572, 5)
    _out, err = _finish(proc, None)
    assert proc.returncode == 0, err
    td = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True)
    assert td.returncode == 0 and len(td.stdout.splitlines()) == 3, td.stderr


def test_send_without_cap_net_raw_says_so(tmp_path: Path) -> None:
    code, err = run_as_nobody(["send", "-i", "lo", "/nonexistent.pcap"], preload=["sockscope.capture.inject"])
    assert code == 1, err
    assert err.strip() == "sockscope send: sending frames needs CAP_NET_RAW (run as root)"
