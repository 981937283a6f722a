"""The inventory across network namespaces built by the test itself."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from typing import Any

import sockscope
from topology import Netns, Topology

CLI = [sys.executable, "-m", "sockscope"]

# A TCP server and one client connection inside a namespace; prints "ready".
SERVER = r"""
import socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
lst = socket.socket(fam)
lst.bind((host, port))
lst.listen()
conn = socket.create_connection((host, port))
peer, _ = lst.accept()
print("ready", flush=True)
try:
    conn.recv(1)  # returns when the connection is destroyed
    print("closed", flush=True)
except OSError as exc:
    print("error", exc.errno, flush=True)
time.sleep(30)
"""


def spawn_server(topo: Topology, ns: Netns | None, host: str, port: int) -> subprocess.Popen[Any]:
    if ns is None:  # a namespace that only this process holds: no name in /run/netns
        proc = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && exec \"$@\"",
                                 "sh", sys.executable, "-c", SERVER, host, str(port)],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        topo.adopt(proc)
    else:
        proc = topo.spawn(ns, sys.executable, "-c", SERVER, host, str(port))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == "ready"
    return proc


def python_pid(proc: subprocess.Popen[Any]) -> int:
    """`ip netns exec` and `unshare` exec the program, so the pid is the server's."""
    return proc.pid


def test_one_namespace_by_name_path_and_pid(topology: Topology) -> None:
    a = topology.add_netns("a")
    topology.add_veth(a, topology.add_netns("b"))
    server = spawn_server(topology, a, "198.51.100.1", 8080)
    for spec in (a.name, a.path, str(server.pid)):
        socks = sockscope.sockets("tcp", netns=spec, filter="sport = :8080 or dport = :8080")
        assert sorted(s.state for s in socks) == ["ESTABLISHED", "ESTABLISHED", "LISTEN"]
        assert {s.netns for s in socks} == {a.name}
        assert all([o.pid for o in s.owners] == [python_pid(server)] for s in socks)
    # Not visible from the host namespace.
    assert not sockscope.sockets("tcp", filter="sport = :8080 and src 198.51.100.1")


def test_all_netns_finds_named_and_process_held_namespaces(topology: Topology) -> None:
    a, b = topology.add_netns("a"), topology.add_netns("b")
    topology.add_veth(a, b)
    sa = spawn_server(topology, a, "198.51.100.1", 7001)
    sb = spawn_server(topology, b, "198.51.100.2", 7002)
    hidden = spawn_server(topology, None, "127.0.0.1", 7003)
    hidden_ns = os.stat(f"/proc/{hidden.pid}/ns/net").st_ino
    result = subprocess.run([*CLI, "ls", "-t", "-l", "--all-netns", "--json"],
                            capture_output=True, text=True, check=True)
    listeners = {(i["local"]["port"], i["netns"]): i for i in json.loads(result.stdout)}
    assert (7001, a.name) in listeners and (7002, b.name) in listeners
    assert (7003, f"net:[{hidden_ns}]") in listeners
    assert listeners[(7001, a.name)]["owners"][0]["pid"] == sa.pid
    assert listeners[(7002, b.name)]["owners"][0]["pid"] == sb.pid
    assert listeners[(7003, f"net:[{hidden_ns}]")]["owners"][0]["pid"] == hidden.pid
    table = subprocess.run([*CLI, "ls", "-t", "-l", "--all-netns"], capture_output=True,
                           text=True, check=True).stdout
    assert table.splitlines()[0].split()[0] == "Netns" and a.name in table


def test_kill_in_a_namespace_aborts_the_connection(topology: Topology) -> None:
    a = topology.add_netns("a")
    server = spawn_server(topology, a, "127.0.0.1", 9000)
    dry = subprocess.run([*CLI, "kill", "--dry-run", "-N", a.name, "dport = :9000"],
                         capture_output=True, text=True, check=True)
    assert dry.stdout.startswith("would close tcp ESTABLISHED 127.0.0.1:")
    assert sockscope.sockets("tcp", netns=a.name, filter="dport = :9000")  # still there
    done = subprocess.run([*CLI, "kill", "-N", a.name, "dport = :9000"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("closed tcp ESTABLISHED 127.0.0.1:")
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], 5)
    # The client's blocked recv fails (ECONNABORTED = 103) or sees the close.
    assert ready and server.stdout.readline().split()[0] in ("error", "closed")
    assert not sockscope.sockets("tcp", netns=a.name, filter="dport = :9000")


def test_kill_refuses_empty_filter_and_unknown_namespace() -> None:
    empty = subprocess.run([*CLI, "kill"], capture_output=True, text=True)
    assert empty.returncode == 2 and "empty filter" in empty.stderr
    unknown = subprocess.run([*CLI, "kill", "-N", "ssc-none", "dport = :1"],
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1


PING_SOCKET = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
s.bind(("127.0.0.1", 0))
print("ready", s.getsockname()[1], flush=True)
time.sleep(30)
"""


def test_icmp_datagram_sockets_are_listed_with_their_owner(topology: Topology) -> None:
    """Unprivileged ping sockets (which ss does not list) come from /proc/net/icmp,
    with the process that holds them."""
    ns = topology.add_netns("ping")
    topology.run(ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 0")  # root may open them here
    proc = topology.spawn(ns, sys.executable, "-c", PING_SOCKET)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready
    word, ident = proc.stdout.readline().split()
    assert word == "ready"
    out = subprocess.run([*CLI, "ls", "--icmp", "-N", ns.name, "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    (found,) = json.loads(out.stdout)
    assert (found["proto"], found["type"], found["local"]["port"]) == ("icmp", "dgram", int(ident))
    assert [o["pid"] for o in found["owners"]] == [proc.pid]
    everything = subprocess.run([*CLI, "ls", "-N", ns.name], capture_output=True, text=True, check=True)
    lines = everything.stdout.splitlines()
    assert any(line.startswith("icmp") and f"127.0.0.1:{ident}" in line for line in lines)
