"""/proc/net parsers against tables recorded from a real kernel (data/procnet)."""

from __future__ import annotations

import json
from pathlib import Path

from sockscope.inventory import procnet
from sockscope.inventory.model import InetAddress, NetlinkAddress, PacketAddress, Socket, UnixAddress

DATA = Path(__file__).parent / "data" / "procnet"
EXP = json.loads((DATA / "expected.json").read_text())


def table(name: str) -> str:
    return (DATA / name).read_text()


def one(socks: list[Socket], inode: int) -> Socket:
    (found,) = [s for s in socks if s.inode == inode]
    return found


def test_tcp_listener_and_connection() -> None:
    socks = procnet.parse_inet(table("tcp"), "tcp", "inet", "n")
    port, ino = EXP["listener"]
    lst = one(socks, ino)
    assert (lst.state, lst.local, lst.remote) == ("LISTEN", InetAddress("127.0.0.1", port), None)
    cport, cino = EXP["client"]
    cli = one(socks, cino)
    assert cli.local == InetAddress("127.0.0.1", cport) and cli.remote == InetAddress("127.0.0.1", port)
    srv = one(socks, EXP["server"])
    assert srv.state == "ESTABLISHED" and srv.recv_q == 300 and srv.source == "procfs"
    assert srv.uid == 0 and srv.family == "inet" and srv.type == "stream"


def test_ipv6_tcp_and_udp() -> None:
    port, ino = EXP["listener6"]
    lst = one(procnet.parse_inet(table("tcp6"), "tcp", "inet6", "n"), ino)
    assert lst.local == InetAddress("::1", port) and lst.family == "inet6"
    uport, uino = EXP["udp6"]
    udp = one(procnet.parse_inet(table("udp6"), "udp", "inet6", "n"), uino)
    assert (udp.state, udp.type, udp.local) == ("UNCONN", "dgram", InetAddress("::1", uport))


def test_raw_sockets_carry_their_protocol() -> None:
    raw = one(procnet.parse_inet(table("raw"), "raw", "inet", "n"), EXP["raw"])
    assert raw.protocol_number == 1 and raw.local == InetAddress("0.0.0.0", 0)
    raw6 = one(procnet.parse_inet(table("raw6"), "raw", "inet6", "n"), EXP["raw6"])
    assert raw6.protocol_number == 58 and raw6.type == "raw"


def test_unix_abstract_listener_and_path_with_space() -> None:
    socks = procnet.parse_unix(table("unix"), "n")
    abst = one(socks, EXP["unix_abstract"])
    assert abst.local == UnixAddress("ssc-procnet", True) and abst.state == "LISTEN"
    named = one(socks, EXP["unix_path"])
    assert named.local == UnixAddress("/tmp/ssc procnet.sock", False)
    assert named.type == "seqpacket" and named.state == "UNCONN"


def test_packet_and_netlink() -> None:
    pkt = one(procnet.parse_packet(table("packet"), "n", {1: "lo"}), EXP["packet"])
    assert pkt.local == PacketAddress(0x88CC, "lo", 1) and pkt.type == "dgram"
    ino, portid = EXP["netlink"]
    nl = one(procnet.parse_netlink(table("netlink"), "n"), ino)
    assert nl.local == NetlinkAddress("route", portid, 1)


def test_header_only_and_short_lines_are_ignored() -> None:
    assert procnet.parse_inet(table("tcp").splitlines()[0] + "\n   junk\n", "tcp", "inet", "n") == []
