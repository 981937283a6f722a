"""The inventory at scale: streaming memory, repeated calls, iter_sockets against sockets().

The sockets live in a namespace the test builds, held by worker processes that
raise their descriptor limit; sockscope runs in a child process whose peak RSS
(VmHWM of its own address space, which exec resets, unlike ru_maxrss) it reports.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import sockscope
from topology import Netns, Topology

# Holds `pairs` established loopback TCP connections (both ends) in its namespace,
# spread over 8 listeners; prints "ready" and waits for stdin to close.
HOLDER = r"""
import resource, socket, struct, sys
pairs = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
linger = struct.pack("ii", 1, 0)  # closes are resets: no TIME_WAIT left behind
listeners = []
for i in range(8):
    lst = socket.socket()
    lst.bind((f"127.0.0.{i + 1}", 0))
    lst.listen(4096)
    listeners.append(lst)
held = []
for n in range(pairs):
    lst = listeners[n % 8]
    c = socket.create_connection(lst.getsockname())
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    a, _ = lst.accept()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    held += [c, a]
print("ready", flush=True)
sys.stdin.read()
"""

# Runs the CLI's main() in this process with stdout to /dev/null, then prints the
# exit status and VmHWM (KiB) of this process.
MEASURED = r"""
import os, sys
devnull = os.open(os.devnull, os.O_WRONLY)
os.dup2(devnull, 1)
from sockscope.cli.main import main
status = main(sys.argv[1:])
sys.stdout.flush()
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
sys.stderr.write(f"\nMEASURED {status} {hwm}\n")
"""


def hold(topology: Topology, ns: Netns, pairs: int) -> subprocess.Popen[Any]:
    proc = topology.spawn(ns, sys.executable, "-c", HOLDER, str(pairs), stdin=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready and proc.stdout.readline().strip() == "ready", "the socket holder did not start"
    return proc


def release(*holders: subprocess.Popen[Any]) -> None:
    """Let the holders go (EOF on their stdin) and close our ends of their pipes."""
    for proc in holders:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
    for proc in holders:
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]


def peak_kib(ns: Netns, *args: str) -> int:
    """The peak RSS of `sockscope ARGS -N ns` run in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", MEASURED, *args, "-N", ns.name],
                          capture_output=True, text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1].split()
    assert last[0] == "MEASURED" and last[1] == "0", done.stderr[-2000:]
    return int(last[2])


@pytest.fixture
def crowded(topology: Topology) -> tuple[Topology, Netns]:
    ns = topology.add_netns("crowd")
    topology.run(ns, "ip", "link", "set", "lo", "up")
    return topology, ns


STREAMING = [("--jsonl",), ("--csv",), ("--no-align",), ("--json",)]


def test_streaming_formats_do_not_grow_with_the_socket_count(
        crowded: tuple[Topology, Netns]) -> None:
    topo, ns = crowded
    small_load = hold(topo, ns, 500)  # 1,000 sockets
    small = {fmt: peak_kib(ns, "ls", "-t", *fmt) for fmt in [*STREAMING, ()]}
    big_load = [hold(topo, ns, 4750) for _ in range(4)]  # 38,000 more
    big = {fmt: peak_kib(ns, "ls", "-t", *fmt) for fmt in [*STREAMING, ()]}
    release(small_load, *big_load)
    added = 38_000
    report = {" ".join(fmt) or "table": (small[fmt], big[fmt]) for fmt in small}
    for fmt in STREAMING:
        # Before streaming: ~1.5 KiB a socket, 55 MiB more here. Allowed: the owner
        # map (~30 bytes a socket) and noise.
        assert big[fmt] - small[fmt] < 4096, report
    # The aligned table must keep its rows, compactly: ~100 bytes a row (was ~1.6 KiB).
    assert (big[()] - small[()]) * 1024 / added < 300, report


@pytest.fixture
def tcp_unix_udp() -> Iterator[list[socket.socket]]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", 0))
    pair = socket.socketpair()
    held = [lst, cli, srv, udp, *pair]
    try:
        yield held
    finally:
        for s in held:
            s.close()


def test_iter_sockets_yields_what_sockets_returns(tcp_unix_udp: list[socket.socket]) -> None:
    mine = {os.fstat(s.fileno()).st_ino for s in tcp_unix_udp}
    for kwargs in ({}, {"owners": False}, {"proto": ["tcp", "unix"], "info": True},
                   {"filter": "state established"}, {"pid": os.getpid()}):
        listed = {s.inode: s.to_dict() for s in sockscope.sockets(**kwargs) if s.inode in mine}
        streamed = {s.inode: s.to_dict() for s in sockscope.iter_sockets(**kwargs)
                    if s.inode in mine}
        assert listed and streamed.keys() == listed.keys(), kwargs
        for inode, entry in listed.items():
            if "tcp_info" in entry:  # counters move between the two calls
                entry.pop("tcp_info")
                streamed[inode].pop("tcp_info")
            assert streamed[inode] == entry, kwargs
    assert len([s for s in sockscope.sockets() if s.inode in mine]) == len(mine)


# 1,000 rounds of three calls in one process, each forking its scan child; prints the
# descriptors, the Python memory blocks in use and the RSS after the warm-up and at
# the end. It holds a few sockets of its own, so that owners are found each time.
REPEATED = r"""
import gc, json, os, socket, sys, threading
import sockscope
assert threading.active_count() == 1  # so that the forked scan is what runs
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen()
cli = socket.create_connection(lst.getsockname())
srv, _ = lst.accept()
pair = socket.socketpair()
mine = {os.fstat(s.fileno()).st_ino for s in (lst, cli, srv, *pair)}

def state():
    gc.collect()
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    return len(os.listdir("/proc/self/fd")), sys.getallocatedblocks(), rss

def one_round():
    owned = {s.inode for s in sockscope.sockets("tcp") if s.owners}
    owned |= {s.inode for s in sockscope.iter_sockets(["tcp", "unix"]) if s.owners}
    assert mine <= owned, (mine, owned)
    it = sockscope.iter_sockets("tcp")
    next(it)
    it.close()  # stopped early: the netlink socket goes too

for _ in range(50):
    one_round()
before = state()
for _ in range(int(sys.argv[1])):
    one_round()
after = state()
me = os.getpid()
print(json.dumps({"before": before, "after": after,
                  "children": open(f"/proc/{me}/task/{me}/children").read().split()}))
"""


def test_repeated_calls_leak_neither_descriptors_nor_memory() -> None:
    # In a PID namespace of its own, the owner scan sees only this process, so the
    # 3,000 calls take seconds whatever else runs on the host.
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc",
                           sys.executable, "-c", REPEATED, "1000"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    (fds_before, blocks_before, rss_before), (fds_after, blocks_after, rss_after) = \
        got["before"], got["after"]
    assert fds_after == fds_before, got
    assert got["children"] == [], got  # every scan child reaped
    # 3,000 calls: one object kept a call would be 3,000 blocks more.
    assert blocks_after - blocks_before < 300, got
    assert rss_after - rss_before < 512, got


def test_both_tables_name_a_unix_peer_by_its_path(tmp_path: Any) -> None:
    path = str(tmp_path / "peer.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen()
    client = socket.socket(socket.AF_UNIX)
    client.connect(path)
    accepted, _ = server.accept()
    try:
        me = os.fstat(client.fileno()).st_ino
        tables = []
        for extra in ((), ("--no-align",)):
            done = subprocess.run([sys.executable, "-m", "sockscope", "ls", "-x", "-H", *extra],
                                  capture_output=True, text=True, timeout=60, check=True)
            rows = [line.split() for line in done.stdout.splitlines()]
            # The client is unbound: its peer is the accepted socket, named by the path.
            tables.append([row[2:8] for row in rows if row[5] == str(me)])
        assert tables[0] == tables[1] and len(tables[0]) == 1, tables
        assert tables[0][0][4:6] == [path, str(os.fstat(accepted.fileno()).st_ino)], tables
    finally:
        for s in (client, accepted, server):
            s.close()


@pytest.mark.parametrize("fmt", [(), ("--jsonl",), ("--csv",), ("--no-align",)])
def test_stdout_closed_is_one_line_and_status_1(fmt: tuple[str, ...]) -> None:
    done = subprocess.run([sys.executable, "-m", "sockscope", "ls", "-t", *fmt], stdout=None,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == ["sockscope ls: write error: standard output is closed"]
