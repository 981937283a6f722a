"""Interface counters in namespaces built by the test: the API and ``sockscope ifaces``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from sockscope.inventory.interfaces import Interface, interfaces
from topology import Netns, Topology

CLI = [sys.executable, "-m", "sockscope", "ifaces"]
DATAGRAMS = 20

# Sends N datagrams to host:port and exits; nobody needs to listen (the
# receiving side's counters count a datagram even when it is then refused).
SENDER = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(n):
    s.sendto(b"ssc" * 100, (host, port))
"""


def pair(topology: Topology) -> tuple[Netns, Netns]:
    a, b = topology.add_netns("a"), topology.add_netns("b")
    topology.add_veth(a, b, "198.51.100.1/24", "198.51.100.2/24", "2001:db8::1/64", "2001:db8::2/64")
    return a, b


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30)


def one(found: list[Interface], name: str) -> Interface:
    (iface,) = [i for i in found if i.name == name]
    return iface


def test_veth_seen_with_addresses_mtu_and_kind(topology: Topology) -> None:
    a, _ = pair(topology)
    eth0 = one(interfaces(netns=a.name), "eth0")
    assert eth0.kind == "veth" and eth0.mtu == 1500 and eth0.netns == a.name
    assert eth0.state == "UP" and "UP" in eth0.flags
    assert eth0.addresses[:2] == ["198.51.100.1/24", "2001:db8::1/64"]
    assert eth0.mac and len(eth0.mac) == 17
    lo = one(interfaces(netns=a.name), "lo")
    assert lo.index == 1 and "LOOPBACK" in lo.flags
    # names narrows the list; the namespace only holds lo and eth0
    assert [i.name for i in interfaces(netns=a.name, names=["eth0"])] == ["eth0"]
    assert {i.name for i in interfaces(netns=a.name)} == {"lo", "eth0"}


def test_counters_grow_with_traffic(topology: Topology) -> None:
    a, b = pair(topology)
    topology.start_udp_echo(b, "198.51.100.2", 7)
    # One probe first so ARP is resolved and no datagram waits in the neighbour queue.
    assert topology.udp_probe(a, "198.51.100.2", 7) == "198.51.100.1"
    sent_before = one(interfaces(netns=a.name, names=["eth0"]), "eth0")
    recv_before = one(interfaces(netns=b.name, names=["eth0"]), "eth0")
    topology.run(a, sys.executable, "-c", SENDER, "198.51.100.2", "9", str(DATAGRAMS))
    sent_after = one(interfaces(netns=a.name, names=["eth0"]), "eth0")
    recv_after = one(interfaces(netns=b.name, names=["eth0"]), "eth0")
    assert sent_after.tx_packets - sent_before.tx_packets >= DATAGRAMS
    assert recv_after.rx_packets - recv_before.rx_packets >= DATAGRAMS
    assert sent_after.tx_bytes - sent_before.tx_bytes >= DATAGRAMS * (300 + 28)
    assert recv_after.rx_bytes - recv_before.rx_bytes >= DATAGRAMS * (300 + 28)


def test_cli_table_and_json(topology: Topology) -> None:
    a, _ = pair(topology)
    table = cli("-N", a.name)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["Iface", "State", "MTU"] and header.endswith("Addresses")
    eth0_row = next(r for r in rows if r.startswith("eth0 "))
    assert "198.51.100.1/24" in eth0_row and " 1500 " in eth0_row
    as_json = cli("--netns", a.name, "--json", "eth0")
    assert as_json.returncode == 0, as_json.stderr
    (item,) = json.loads(as_json.stdout)
    assert item["name"] == "eth0" and item["kind"] == "veth" and item["netns"] == a.name
    assert "2001:db8::1/64" in item["addresses"]


def test_cli_errors_are_one_line_exit_2(topology: Topology) -> None:
    a, _ = pair(topology)
    for args, text in ((("-N", a.name, "nosuch0"), "unknown interface 'nosuch0'"),
                       (("-N", "ssc-no-such-netns"), "not found")):
        proc = cli(*args)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and text in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_cli_interval_prints_rates(topology: Topology) -> None:
    a, _ = pair(topology)
    proc = cli("-N", a.name, "--interval", "0.2", "--count", "2")
    assert proc.returncode == 0, proc.stderr
    tables = proc.stdout.strip().split("\n\n")
    assert len(tables) == 2
    for table in tables:
        header, *rows = table.splitlines()
        assert header.split()[:3] == ["Iface", "RX-B/s", "RX-pkt/s"]
        assert sorted(r.split()[0] for r in rows) == ["eth0", "lo"]
    lines = cli("-N", a.name, "--interval", "0.2", "--count", "2", "--json", "eth0").stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        record = json.loads(line)
        assert record["seconds"] > 0.1
        (rate,) = record["interfaces"]
        assert rate["name"] == "eth0" and rate["rx_packets"] >= 0


def test_cli_interval_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen([*CLI, "--interval", "0.2", "lo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("Iface")  # one interval is out: the loop runs
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and err == ""
