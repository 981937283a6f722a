"""The network the probe tests trace and scan (built once per test module):

    left - r1 - r2 - r3 - right          198.51.100.0/24 and 2001:db8:<hop>::/64
                                 \\- (203.0.113.1, 2001:db8:ff::1): r3 answers host-unreachable

* r2 never answers: nftables in its namespace drops the time-exceeded it sends;
* r3 rejects traffic to the "unreachable" addresses with ICMP host-unreachable
  (ICMPv6 address-unreachable), which traceroute marks !H;
* right listens on TCP 8080 (open) and UDP 5353 (open, it answers), has nothing on
  TCP 8081 / UDP 5354 (closed) and drops TCP 8082 / UDP 5355 (filtered), rejects
  TCP 8083 with admin-prohibited.

ICMP rate limits are off everywhere, or repeated traces would see routers fall silent.
"""

from __future__ import annotations

from dataclasses import dataclass

from topology import Line, Topology

UNREACH4, UNREACH6 = "203.0.113.1", "2001:db8:ff::1"
OPEN, CLOSED, DROPPED, PROHIBITED = 8080, 8081, 8082, 8083
UDP_OPEN, UDP_CLOSED, UDP_DROPPED = 5353, 5354, 5355

_SILENT = """
table inet probe_silent {
    chain output_drop {
        type filter hook output priority 0; policy accept;
        icmp type time-exceeded drop
        icmpv6 type time-exceeded drop
    }
}
"""

_REJECT = f"""
table inet probe_reject {{
    chain forward_reject {{
        type filter hook forward priority 0; policy accept;
        ip daddr {UNREACH4} reject with icmp type host-unreachable
        ip6 daddr {UNREACH6} reject with icmpv6 type addr-unreachable
    }}
}}
"""

_PORTS = f"""
table inet probe_ports {{
    chain input_ports {{
        type filter hook input priority 0; policy accept;
        tcp dport {DROPPED} drop
        udp dport {UDP_DROPPED} drop
        tcp dport {PROHIBITED} reject with icmpx type admin-prohibited
    }}
}}
"""

_LISTEN = f"""
import socket, sys, select
socks = []
for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    t.bind((host, {OPEN})); t.listen(4096)
    u = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u.bind((host, {UDP_OPEN}))
    socks += [t, u]
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        if s.type == socket.SOCK_STREAM:
            s.accept()[0].close()
        else:
            data, peer = s.recvfrom(2048)
            s.sendto(b"hello", peer)
"""


@dataclass(frozen=True)
class ProbeNet:
    line: Line

    @property
    def left(self) -> str:
        return self.line.left.name

    def dest(self, v6: bool) -> str:
        addr = self.line.right_addr6 if v6 else self.line.right_addr
        assert addr is not None
        return addr

    def hops(self, v6: bool) -> list[str | None]:
        """The address each TTL should answer from; None for the silent router."""
        out: list[str | None] = []
        for i, link in enumerate(self.line.links):
            addr = link.addr6_b if v6 else link.addr_b
            out.append(None if i == 1 else addr)
        return out

    def unreach(self, v6: bool) -> str:
        return UNREACH6 if v6 else UNREACH4


def build(topo: Topology) -> ProbeNet:
    line = topo.line(3, ipv6=True)
    for ns in line.nodes:
        topo.set_sysctl(ns, "net.ipv4.icmp_ratelimit", 0)
        topo.set_sysctl(ns, "net.ipv6.icmp.ratelimit", 0)
        topo.set_sysctl(ns, "net.ipv4.icmp_msgs_per_sec", 100000)
    r1, r2, r3 = line.routers
    # Routes to the unreachable addresses lead to r3, which rejects them.
    for k, router in enumerate((r1, r2)):
        nxt = line.links[k + 1]
        topo.add_route(router, f"{UNREACH4}/32", nxt.addr_b)
        assert nxt.addr6_b is not None
        topo.add_route(router, f"{UNREACH6}/128", nxt.addr6_b)
    assert line.links[3].addr6_b is not None
    topo.add_route(r3, f"{UNREACH4}/32", line.links[3].addr_b)
    topo.add_route(r3, f"{UNREACH6}/128", line.links[3].addr6_b)
    topo.nft(r2, _SILENT)
    topo.nft(r3, _REJECT)
    topo.nft(line.right, _PORTS)
    import select
    import sys

    proc = topo.spawn(line.right, sys.executable, "-c", _LISTEN)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == "ready"
    return ProbeNet(line)


REWRITE_TOS = """
table inet probe_tos {
    chain forward_tos {
        type filter hook forward priority 0; policy accept;
        ip dscp set cs1
        ip6 dscp set cs1
    }
}
"""


NARROW_MTU = 1400


def narrow(topo: Topology, net: ProbeNet) -> str:
    """Give the r2 - r3 link an MTU of 1400, as a tunnel on the way would; returns
    the address r2 answers "too big" from (its end of that link)."""
    link = net.line.links[2]
    topo.run(link.a, "ip", "link", "set", link.veth.name_a, "mtu", str(NARROW_MTU))
    topo.run(link.b, "ip", "link", "set", link.veth.name_b, "mtu", str(NARROW_MTU))
    return link.addr_a


def forget_path_mtus(topo: Topology, net: ProbeNet) -> None:
    """Flush the path MTUs every node has learnt, so a test starts as a fresh host."""
    for ns in net.line.nodes:
        topo.run(ns, "ip", "route", "flush", "cache")
        topo.run(ns, "ip", "-6", "route", "flush", "cache")
