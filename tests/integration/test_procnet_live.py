"""The /proc/net fallback against live sockets (loopback only; raw and packet sockets need root)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sockscope.inventory import procnet
from sockscope.inventory.model import InetAddress, NetlinkAddress, PacketAddress, Socket, UnixAddress
from sockscope.netlink import sockdiag
from sockscope.netlink.socket import NETLINK_SOCK_DIAG, NetlinkSocket
from sockscope.platform import linux
from topology import Topology

pytestmark = pytest.mark.needs_root

ETH_P_LOCAL_EXP = 0x88B5  # IEEE "local experimental" ethertype: nothing on the host sends it


def ino(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def find(kind: str, s: socket.socket) -> Socket:
    found = [x for x in procnet.read_sockets(kind, "here") if x.inode == ino(s)]
    assert len(found) == 1, f"{kind}: inode {ino(s)} found {len(found)} times"
    return found[0]


class Sockets:
    """Sockets opened by one test, all closed when it ends."""

    def __init__(self) -> None:
        self.open: list[socket.socket] = []

    def new(self, *args: Any) -> socket.socket:
        return self.keep(socket.socket(*args))

    def keep(self, s: socket.socket) -> socket.socket:
        self.open.append(s)
        return s


@pytest.fixture
def socks() -> Iterator[Sockets]:
    held = Sockets()
    yield held
    for s in held.open:
        s.close()


@pytest.mark.parametrize(("family", "host", "kind"),
                         [(socket.AF_INET, "127.0.0.1", "tcp"), (socket.AF_INET6, "::1", "tcp6")])
def test_tcp_listener_and_connection(socks: Sockets, family: int, host: str, kind: str) -> None:
    lst = socks.new(family, socket.SOCK_STREAM)
    lst.bind((host, 0))
    lst.listen()
    port = lst.getsockname()[1]
    cli = socks.new(family, socket.SOCK_STREAM)
    cli.connect((host, port))
    srv = socks.keep(lst.accept()[0])
    cli.sendall(b"y" * 123)
    got = find(kind, lst)
    assert (got.state, got.local, got.remote) == ("LISTEN", InetAddress(host, port), None)
    assert got.source == "procfs"
    assert (got.family, got.proto, got.type) == ("inet" if kind == "tcp" else "inet6", "tcp", "stream")
    c = find(kind, cli)
    assert (c.state, c.local, c.remote, c.uid) == (
        "ESTABLISHED", InetAddress(host, cli.getsockname()[1]), InetAddress(host, port), os.geteuid())
    s = find(kind, srv)
    assert (s.local, s.remote, s.recv_q) == (InetAddress(host, port), c.local, 123)


def test_udp_bound_and_connected(socks: Sockets) -> None:
    a = socks.new(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socks.new(socket.AF_INET6, socket.SOCK_DGRAM)
    b.bind(("::1", 0))
    b.connect(("::1", 9))  # the discard port: nothing is sent, connect only sets the peer
    got = find("udp", a)
    assert (got.state, got.type, got.local, got.remote) == (
        "UNCONN", "dgram", InetAddress("127.0.0.1", a.getsockname()[1]), None)
    got6 = find("udp6", b)
    assert (got6.state, got6.remote) == ("ESTABLISHED", InetAddress("::1", 9))


@pytest.mark.parametrize(("family", "proto", "kind"), [
    (socket.AF_INET, socket.IPPROTO_ICMP, "raw"),
    (socket.AF_INET, socket.IPPROTO_RAW, "raw"),
    (socket.AF_INET6, socket.IPPROTO_ICMPV6, "raw6"),
])
def test_raw_sockets(socks: Sockets, family: int, proto: int, kind: str) -> None:
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    unbound = socks.new(family, socket.SOCK_RAW, proto)
    got = find(kind, unbound)
    assert (got.proto, got.type, got.state, got.protocol_number) == ("raw", "raw", "UNCONN", proto)
    assert got.local == InetAddress("0.0.0.0" if kind == "raw" else "::", 0) and got.remote is None
    conn = socks.new(family, socket.SOCK_RAW, proto)
    conn.bind((host, 0))
    conn.connect((host, 0))
    got = find(kind, conn)
    assert (got.state, got.local, got.remote) == ("ESTABLISHED", InetAddress(host, 0), InetAddress(host, 0))
    assert got.protocol_number == proto


def test_unix_named_abstract_and_unaccepted(socks: Sockets, tmp_path: Path) -> None:
    path = str(tmp_path / "live sock")
    lst = socks.new(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(path)
    lst.listen()
    cli = socks.new(socket.AF_UNIX, socket.SOCK_STREAM)
    cli.connect(path)  # left unaccepted
    abst = socks.new(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"ssc-procnet-{os.getpid()}"
    abst.bind("\0" + name)
    table = procnet.read_sockets("unix", "here")
    by_inode = {s.inode: s for s in table}
    assert (by_inode[ino(lst)].state, by_inode[ino(lst)].local) == ("LISTEN", UnixAddress(path, False))
    assert (by_inode[ino(cli)].state, by_inode[ino(cli)].local) == ("ESTABLISHED", None)
    assert by_inode[ino(abst)].local == UnixAddress(name, True)
    assert by_inode[ino(abst)].type == "dgram"
    # The unaccepted server end has no inode; like sock_diag, the fallback leaves it out.
    assert all(s.inode for s in table)


def test_unix_states_agree_with_sock_diag(socks: Sockets, tmp_path: Path) -> None:
    """sock_diag is the source of truth: procfs must list the same sockets (no
    inode-0 server ends of unaccepted connections) in the same states."""
    path = str(tmp_path / "agree")
    lst = socks.new(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lst.bind(path)
    lst.listen()
    socks.new(socket.AF_UNIX, socket.SOCK_SEQPACKET).connect(path)
    socks.keep(lst.accept()[0])
    socks.new(socket.AF_UNIX, socket.SOCK_SEQPACKET).connect(path)  # left unaccepted
    for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM):
        socks.keep(s)
    socks.new(socket.AF_UNIX, socket.SOCK_STREAM)  # never bound nor connected
    inodes = {ino(s) for s in socks.open}

    def mine(table: list[Socket]) -> list[tuple[int, str, str, str]]:
        return sorted((s.inode, s.type, s.state, str(s.local)) for s in table
                      if s.inode in inodes or s.local == UnixAddress(path, False))

    with NetlinkSocket(NETLINK_SOCK_DIAG) as nl:
        req = sockdiag.unix_request(0xFFFFFFFF, False, False)
        diag = [sockdiag.parse_unix(m.payload, "here") for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req)]
    proc = mine(procnet.read_sockets("unix", "here"))
    assert proc == mine(diag)
    assert len(proc) == len(inodes)
    assert {state for _, _, state, _ in proc} == {"LISTEN", "ESTABLISHED", "UNCONN"}


def test_packet_socket_bound_to_lo_with_a_queued_frame(socks: Sockets) -> None:
    pkt = socks.new(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_LOCAL_EXP))
    pkt.bind(("lo", ETH_P_LOCAL_EXP))
    got = find("packet", pkt)
    lo = socket.if_nametoindex("lo")
    assert (got.type, got.state, got.local) == ("dgram", "UNCONN", PacketAddress(ETH_P_LOCAL_EXP, "lo", lo))
    assert got.recv_q == 0
    # A frame sent on lo comes straight back in to pkt and waits there unread.
    tx = socks.new(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    tx.sendto(b"ssc", ("lo", ETH_P_LOCAL_EXP, 0, 0, bytes(6)))
    deadline = time.monotonic() + 5
    while find("packet", pkt).recv_q == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert find("packet", pkt).recv_q > 0  # Rmem: the frame's memory, not its 3 bytes
    assert find("packet", tx).local == PacketAddress(0, None, 0)  # protocol 0: receives nothing


def test_netlink_socket(socks: Sockets) -> None:
    nl = socks.new(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    nl.bind((0, 1))  # RTMGRP_LINK
    got = find("netlink", nl)
    assert got.local == NetlinkAddress("route", nl.getsockname()[0], 1)


def test_reads_the_calling_threads_namespace(topology: Topology) -> None:
    """A thread that entered another namespace sees that namespace's tables,
    which /proc/net (the main thread's namespace) would not show it."""
    ns = topology.add_netns("procnet")
    inside_ready, outside_done = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            with linux.in_netns(linux.resolve_netns(ns.name)):
                raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                try:
                    result["inode"] = ino(raw)
                    result["inside"] = {s.inode for s in procnet.read_sockets("raw", ns.name)}
                    inside_ready.set()
                    outside_done.wait(10)
                finally:
                    raw.close()
        except BaseException as exc:
            result["error"] = exc
            inside_ready.set()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside_ready.wait(10)
        assert "error" not in result, result.get("error")
        outside = {s.inode for s in procnet.read_sockets("raw", "here")}
    finally:
        outside_done.set()
        thread.join(10)
    assert result["inode"] in result["inside"]
    assert result["inode"] not in outside
