"""Generated namespace topologies for the probing oracle tests (#14): a chain of
routers of random length, some silent (they drop their own time-exceeded), maybe
one that rejects traffic to the destination with an ICMP unreachable, and a
destination with a random layout of open, closed, dropped and rejected TCP and UDP
ports and of echo requests it drops. A case is a pure function of its seed, and
`Case.describe()` says everything about it, so a failure can be read and replayed
(``SOCKSCOPE_ORACLE_SEED=<seed>`` runs that case first).

    left - r1 - ... - rN - right     198.51.100.0/24 and 2001:db8:<hop>::/64
"""

from __future__ import annotations

import os
import random
import select
import sys
from dataclasses import dataclass, field

from topology import Line, Topology

PORT_BASE = 40000  # the ports of a case are PORT_BASE.. PORT_BASE + n - 1
TCP_KINDS = ("open", "closed", "drop", "reject")
UDP_KINDS = ("open", "closed", "drop")
# A rejecting router's ICMP, as nft names it for each family, and traceroute's mark.
REJECTS = {
    "host": ("host-unreachable", "addr-unreachable", "!H"),
    "net": ("net-unreachable", "no-route", "!N"),
    "admin": ("admin-prohibited", "admin-prohibited", "!X"),
}


@dataclass
class Case:
    seed: int
    v6: bool
    routers: int
    silent: frozenset[int]  # routers (1-based) that never send time-exceeded
    reject: tuple[int, str] | None  # (router, kind of REJECTS) rejecting the destination
    tcp: dict[int, str] = field(default_factory=dict)  # port -> one of TCP_KINDS
    udp: dict[int, str] = field(default_factory=dict)  # port -> one of UDP_KINDS
    dropped_echoes: frozenset[int] = frozenset()  # echo sequences the destination drops

    def describe(self) -> str:
        reject = "none rejects"
        if self.reject is not None:
            reject = f"router {self.reject[0]} rejects with {self.reject[1]}"
        return (
            f"case seed={self.seed}: {'IPv6' if self.v6 else 'IPv4'}, {self.routers} routers,"
            f" silent {sorted(self.silent) or 'none'}, {reject}; TCP {self.tcp}; UDP {self.udp};"
            f" echo requests dropped: {sorted(self.dropped_echoes) or 'none'}"
            f" (replay: SOCKSCOPE_ORACLE_SEED={self.seed})"
        )


def seeds(base: int, n: int) -> list[int]:
    """The seeds of a run: ``n`` from ``base``, after the one asked for in the
    environment, if any."""
    asked = os.environ.get("SOCKSCOPE_ORACLE_SEED")
    out = [int(asked)] if asked else []
    return out + [base + i for i in range(n)]


def generate(seed: int, *, rejecting: bool = True, ports: int = 6) -> Case:
    rng = random.Random(seed)
    routers = rng.randint(1, 4)
    silent = frozenset(r for r in range(1, routers + 1) if rng.random() < 0.3)
    reject = None
    if rejecting and rng.random() < 0.4:
        reject = (rng.randint(1, routers), rng.choice(sorted(REJECTS)))
    tcp = {PORT_BASE + i: rng.choice(TCP_KINDS) for i in range(ports)}
    udp = {PORT_BASE + i: rng.choice(UDP_KINDS) for i in range(ports)}
    dropped = frozenset(s for s in range(1, 9) if rng.random() < 0.25)
    return Case(seed, rng.random() < 0.5, routers, silent, reject, tcp, udp, dropped)


@dataclass(frozen=True)
class Net:
    case: Case
    line: Line

    @property
    def left(self) -> str:
        return self.line.left.name

    @property
    def dest(self) -> str:
        addr = self.line.right_addr6 if self.case.v6 else self.line.right_addr
        assert addr is not None
        return addr



_SERVICES = """
import socket, select, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
host = "::" if fam == socket.AF_INET6 else "0.0.0.0"
socks = []
for kind, port in (a.split(":") for a in sys.argv[2:]):
    s = socket.socket(fam, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    if kind == "tcp":
        s.listen(64)
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        if s.type == socket.SOCK_STREAM:
            s.accept()[0].close()
        else:
            data, peer = s.recvfrom(2048)
            s.sendto(b"answer", peer)
"""


def build(topo: Topology, case: Case) -> Net:
    line = topo.line(case.routers, ipv6=True)
    for ns in line.nodes:  # rate limits off: repeated runs must see the same answers
        topo.set_sysctl(ns, "net.ipv4.icmp_ratelimit", 0)
        topo.set_sysctl(ns, "net.ipv6.icmp.ratelimit", 0)
        topo.set_sysctl(ns, "net.ipv4.icmp_msgs_per_sec", 100000)
    net = Net(case, line)
    for r in case.silent:
        topo.nft(line.routers[r - 1], _SILENT)
    if case.reject is not None:
        router, kind = case.reject
        v4, v6, _mark = REJECTS[kind]
        family, icmp = ("ip6", f"icmpv6 type {v6}") if case.v6 else ("ip", f"icmp type {v4}")
        topo.nft(line.routers[router - 1], _REJECT.format(family=family, target=net.dest, icmp=icmp))
    topo.nft(line.right, _ports_rules(case))
    opened = [f"tcp:{p}" for p, k in case.tcp.items() if k == "open"]
    opened += [f"udp:{p}" for p, k in case.udp.items() if k == "open"]
    if opened:
        proc = topo.spawn(line.right, sys.executable, "-c", _SERVICES, "6" if case.v6 else "4", *opened)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready and proc.stdout.readline().strip() == "ready", case.describe()
    return net


_SILENT = """
table inet oracle_silent {
    chain output_silent {
        type filter hook output priority 0; policy accept;
        icmp type time-exceeded drop
        icmpv6 type time-exceeded drop
    }
}
"""

_REJECT = """
table inet oracle_reject {{
    chain forward_reject {{
        type filter hook forward priority 0; policy accept;
        {family} daddr {target} reject with {icmp}
    }}
}}
"""


def _ports_rules(case: Case) -> str:
    rules = []
    for port, kind in case.tcp.items():
        if kind == "drop":
            rules.append(f"tcp dport {port} drop")
        elif kind == "reject":
            rules.append(f"tcp dport {port} reject with icmpx type admin-prohibited")
    rules += [f"udp dport {port} drop" for port, kind in case.udp.items() if kind == "drop"]
    if case.dropped_echoes:
        seqs = ", ".join(map(str, sorted(case.dropped_echoes)))
        rules.append(f"icmp type echo-request icmp sequence {{ {seqs} }} drop")
        rules.append(f"icmpv6 type echo-request icmpv6 sequence {{ {seqs} }} drop")
    body = "\n        ".join(rules)
    return f"""
table inet oracle_ports {{
    chain input_ports {{
        type filter hook input priority 0; policy accept;
        {body}
    }}
}}
"""
