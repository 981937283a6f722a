"""TCP and UDP clients in their own network namespaces, allowed or refused by
the policy of a `sockscope listen` server in a third one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from topology import Netns, Topology

CLI = [sys.executable, "-m", "sockscope"]
pytestmark = pytest.mark.needs_root

# a: 10.61.1.2 and fd61:1::2 (allowed), b: 10.61.2.2 and fd61:2::2 (refused)
POLICY = """\
# who may use echo
echo : 10.61.1.0/24 [fd61:1::]/64 : allow
echo : ALL : deny
"""

TCP_CLIENT = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"hello\n")
    s.shutdown(socket.SHUT_WR)
    print(s.recv(100).decode().strip() or "closed")
except (ConnectionResetError, BrokenPipeError):
    print("reset")  # the server reset it, however early that arrived
"""

UDP_CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(3):
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recv(100).decode()); break
    except TimeoutError:
        continue
else:
    print("silence")
"""


@pytest.fixture
def three(topology: Topology) -> Iterator[tuple[Topology, Netns, Netns, Netns]]:
    srv, a, b = topology.add_netns("srv"), topology.add_netns("a"), topology.add_netns("b")
    topology.add_veth(srv, a, "10.61.1.1/24", "10.61.1.2/24", "fd61:1::1/64", "fd61:1::2/64")
    topology.add_veth(srv, b, "10.61.2.1/24", "10.61.2.2/24", "fd61:2::1/64", "fd61:2::2/64")
    yield topology, srv, a, b


def _start(topo: Topology, ns: Netns, policy: Path, address: str, *extra: str) -> None:
    proc = topo.spawn(ns, *CLI, "listen", "-v", "-k", "--policy", str(policy), "--daemon", "echo",
                      *extra, address)
    line = proc.stderr.readline()
    assert "listening on" in line, line + proc.stderr.read()


def test_tcp_clients_allowed_and_refused(three: tuple[Topology, Netns, Netns, Netns], tmp_path: Path) -> None:
    topo, srv, a, b = three
    policy = tmp_path / "echo.policy"
    policy.write_text(POLICY)
    _start(topo, srv, policy, "tcp::7007", "--exec", "tr a-z A-Z")
    for host in ("10.61.1.1", "fd61:1::1"):
        assert topo.run(a, sys.executable, "-c", TCP_CLIENT, host, "7007").stdout.strip() == "HELLO"
    for host in ("10.61.2.1", "fd61:2::1"):
        assert topo.run(b, sys.executable, "-c", TCP_CLIENT, host, "7007").stdout.strip() == "reset"


def test_udp_datagrams_allowed_and_refused(
    three: tuple[Topology, Netns, Netns, Netns], tmp_path: Path
) -> None:
    topo, srv, a, b = three
    policy = tmp_path / "echo.policy"
    policy.write_text(POLICY)
    _start(topo, srv, policy, "udp::7007", "--exec", "tr a-z A-Z")
    for host in ("10.61.1.1", "fd61:1::1"):
        assert topo.run(a, sys.executable, "-c", UDP_CLIENT, host, "7007").stdout.strip() == "PING"
    for host in ("10.61.2.1", "fd61:2::1"):
        assert topo.run(b, sys.executable, "-c", UDP_CLIENT, host, "7007").stdout.strip() == "silence"
