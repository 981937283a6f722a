"""Shared pieces of the divert integration tests: a routed line left - r1 - right, the
divert CLI running in r1, a UDP sink in right and a sender in left, and the whole
nftables ruleset of a namespace, to compare before and after a run."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from topology import Line, Netns, Topology

SINK = r"""
import json, socket, sys, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", port))
print("ready", flush=True)
end = time.monotonic() + duration
got = []
while (left := end - time.monotonic()) > 0:
    s.settimeout(left)
    try:
        data, peer = s.recvfrom(65535)
    except TimeoutError:
        break
    got.append([data.hex(), peer[0], round(time.monotonic() - end + duration, 3)])
print(json.dumps(got), flush=True)
"""

SEND = r"""
import socket, sys, time
host, port, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
for text in sys.argv[4:]:
    s.sendto(text.encode(), (host, port))
    time.sleep(gap)
"""


@dataclass
class Net:
    topo: Topology
    line: Line

    @property
    def left(self) -> Netns:
        return self.line.left

    @property
    def router(self) -> Netns:
        return self.line.routers[0]

    @property
    def right(self) -> Netns:
        return self.line.right


FORWARD_5000 = ["--rule", "udp and dst port 5000", "--hook", "forward"]  # what most tests divert


def build(topo: Topology) -> Net:
    line = topo.line(1, ipv6=True)
    return Net(topo, line)


def ruleset(topo: Topology, ns: Netns) -> str:
    """The whole ruleset of ns as ``nft --stateless list ruleset`` prints it (iptables-nft
    rules included; counters left out, since traffic moves them)."""
    return topo.run(ns, "nft", "--stateless", "list", "ruleset").stdout


def divert_tables(topo: Topology, ns: Netns) -> list[str]:
    """The divert tables in ns ("ip sockscope_divert_0_..."): ours, live or left over."""
    out = topo.run(ns, "nft", "list", "tables").stdout.split("\n")
    return [line.removeprefix("table ") for line in out if "sockscope_divert_" in line]


USER_RULES = """
table inet theirs {
  chain early { type filter hook forward priority -100; policy accept; udp dport 5999 counter; }
  chain late { type filter hook forward priority 10; policy accept; udp dport 5998 drop; }
}
"""


def add_user_rules(topo: Topology, ns: Netns, *iptables: list[str]) -> None:
    """An administrator's own rules in ns, before any divert: an nft table of their own
    and, for each argument, one ``iptables`` command (which makes ``table ip filter``)."""
    topo.nft(ns, USER_RULES)
    for args in iptables:
        topo.run(ns, "iptables", *args)


def start_divert(
    net: Net, *args: str, ns: Netns | None = None, wait_for: str = "sockscope_divert_", **kw: Any
) -> subprocess.Popen[str]:
    """``sockscope divert ARGS`` in the router; returns once a table holding
    ``wait_for`` is in."""
    ns = ns or net.router
    proc = net.topo.spawn(ns, sys.executable, "-m", "sockscope", "divert", *args, **kw)
    wait_for_tables(net.topo, ns, proc, wait_for)
    return proc


def wait_for_tables(
    topo: Topology, ns: Netns, proc: subprocess.Popen[str], wait_for: str = "sockscope_divert_"
) -> None:
    deadline = time.monotonic() + 10
    while not any(wait_for in line for line in divert_tables(topo, ns)):
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"divert exited with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError("divert rules did not appear")
        time.sleep(0.05)


def start_sink(net: Net, port: int, duration: float) -> subprocess.Popen[str]:
    proc = net.topo.spawn(net.right, sys.executable, "-c", SINK, str(port), str(duration))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == "ready"
    return proc


def sink_result(proc: subprocess.Popen[str]) -> list[tuple[bytes, str]]:
    out, _err = proc.communicate(timeout=30)
    return [(bytes.fromhex(h), peer) for h, peer, _t in json.loads(out.strip().splitlines()[-1])]


def send(net: Net, host: str, port: int, *texts: str, gap: float = 0.002) -> None:
    net.topo.run(net.left, sys.executable, "-c", SEND, host, str(port), str(gap), *texts)


def stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[str, str, int]:
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=15)
    return out, err, proc.returncode


def csum_errors(topo: Topology, ns: Netns) -> int:
    """UDP InCsumErrors of IPv4 and IPv6 in ns: a packet with a bad checksum counts here."""
    total = 0
    snmp = topo.run(ns, "cat", "/proc/net/snmp").stdout.splitlines()
    for head, values in zip(snmp[::2], snmp[1::2], strict=False):
        if head.startswith("Udp:"):
            total += int(values.split()[head.split().index("InCsumErrors")])
    snmp6 = topo.run(ns, "cat", "/proc/net/snmp6").stdout
    for line in snmp6.splitlines():
        name, value = line.split()
        if name == "Udp6InCsumErrors":
            total += int(value)
    return total
