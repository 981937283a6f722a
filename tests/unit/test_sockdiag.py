"""sock_diag parsers against replies recorded from a real kernel (data/sockdiag)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from sockscope.inventory.model import InetAddress, PacketAddress, UnixAddress
from sockscope.netlink import sockdiag
from sockscope.netlink.codec import DumpCollector, NetlinkError, build_message, iter_messages

DATA = Path(__file__).parent / "data" / "sockdiag"
EXPECTED = json.loads((DATA / "expected.json").read_text())


def payloads(name: str) -> list[memoryview]:
    collector = DumpCollector(seq=1)
    msgs = collector.feed((DATA / name).read_bytes())
    assert collector.done
    return [m.payload for m in msgs]


def by_inode(socks: list, inode: int):  # type: ignore[no-untyped-def]
    found = [s for s in socks if s.inode == inode]
    assert len(found) == 1, f"inode {inode} not found once"
    return found[0]


def test_tcp4_listener_connection_and_info() -> None:
    parser = sockdiag.InetParser("t", "tcp", True, True, lambda i: None)
    socks = [parser.parse(p) for p in payloads("tcp4.bin")]
    lst = by_inode(socks, EXPECTED["listener"]["inode"])
    assert lst.state == "LISTEN"
    assert lst.local == InetAddress("127.0.0.1", EXPECTED["listener"]["port"])
    assert lst.remote is None
    assert lst.send_q == 8  # a listener's send queue is its backlog
    assert lst.family == "inet" and lst.type == "stream" and lst.uid == 0
    cli = by_inode(socks, EXPECTED["client"]["inode"])
    assert cli.state == "ESTABLISHED"
    assert cli.remote == InetAddress("127.0.0.1", EXPECTED["listener"]["port"])
    assert cli.local == InetAddress("127.0.0.1", EXPECTED["client"]["port"])
    assert cli.tcp_info is not None and cli.tcp_info.bytes_acked >= 1000
    assert cli.tcp_info.congestion and cli.tcp_info.snd_cwnd > 0
    assert cli.memory is not None and cli.memory.sndbuf > 0
    srv = by_inode(socks, EXPECTED["server"]["inode"])
    assert srv.recv_q == EXPECTED["server"]["recv_q"]
    assert srv.tcp_info is not None and srv.tcp_info.bytes_received == 1000
    assert cli.cookie and srv.cookie and cli.cookie != srv.cookie


def test_tcp6_listener() -> None:
    parser = sockdiag.InetParser("t", "tcp", False, False, lambda i: None)
    socks = [parser.parse(p) for p in payloads("tcp6.bin")]
    lst = by_inode(socks, EXPECTED["listener6"]["inode"])
    assert lst.family == "inet6"
    assert lst.local == InetAddress("::1", EXPECTED["listener6"]["port"])
    assert lst.tcp_info is None  # not asked for


def test_unix_path_abstract_peer_vfs() -> None:
    socks = [sockdiag.parse_unix(p, "t") for p in payloads("unix.bin")]
    lst = by_inode(socks, EXPECTED["unix_listener"]["inode"])
    assert lst.local == UnixAddress(EXPECTED["unix_listener"]["path"], False)
    assert lst.state == "LISTEN" and lst.send_q == 3
    assert list(lst.vfs) == EXPECTED["unix_listener"]["vfs"]
    cli = by_inode(socks, EXPECTED["unix_client"]["inode"])
    assert cli.state == "ESTABLISHED" and cli.peer_inode == EXPECTED["unix_client"]["peer"]
    srv = by_inode(socks, EXPECTED["unix_client"]["peer"])
    assert srv.peer_inode == cli.inode
    abst = by_inode(socks, EXPECTED["unix_abstract"]["inode"])
    assert abst.local == UnixAddress("ssc-recorded", True) and abst.type == "dgram"
    assert abst.memory is not None


def test_packet_socket() -> None:
    socks = [sockdiag.parse_packet(p, "t", {1: "lo"}.get) for p in payloads("packet.bin")]
    pkt = by_inode(socks, EXPECTED["packet"]["inode"])
    assert pkt.local == PacketAddress(EXPECTED["packet"]["protocol"], "lo", 1)
    assert pkt.type == "raw" and pkt.uid == 0


def test_netlink_sockets() -> None:
    socks = [sockdiag.parse_netlink(p, "t") for p in payloads("netlink.bin")]
    assert socks and all(s.family == "netlink" for s in socks)
    assert {"route", "generic"} <= {s.local.protocol for s in socks}  # type: ignore[union-attr]


def test_tcp_info_shorter_kernel_reads_what_is_there() -> None:
    # An old kernel's tcp_info ends after total_retrans (104 bytes): later fields absent.
    raw = bytes(8) + struct.pack("=24I", *range(1, 25))
    fields = sockdiag.decode_tcp_info(raw)
    assert fields["rto"] == 1 and fields["total_retrans"] == 24
    assert "bytes_acked" not in fields
    info = sockdiag.parse_tcp_info(raw, "cubic")
    assert info.bytes_sent is None and info.rtt_ms == 0.016  # rtt is the 16th u32 (µs)


def test_destroy_request_names_the_socket() -> None:
    parser = sockdiag.InetParser("t", "tcp", False, False, lambda i: None)
    cli = by_inode([parser.parse(p) for p in payloads("tcp4.bin")], EXPECTED["client"]["inode"])
    req = sockdiag.destroy_request(cli)
    assert len(req) == 56
    family, proto, _ext, _pad, _states = struct.unpack_from("=BBBBI", req)
    sport, dport = struct.unpack_from("!HH", req, 8)
    assert (family, proto) == (2, 6)
    assert sport == EXPECTED["client"]["port"] and dport == EXPECTED["listener"]["port"]
    assert req[12:16] == bytes([127, 0, 0, 1])
    lo, hi = struct.unpack_from("=II", req, 48)
    assert lo | (hi << 32) == cli.cookie


def test_dump_error_is_raised() -> None:
    err = build_message(2, 0, 7, struct.pack("=i", -2) + bytes(16))
    with pytest.raises(NetlinkError) as info:
        DumpCollector(seq=7).feed(err)
    assert info.value.errno == 2


def test_truncated_message_is_rejected() -> None:
    msg = build_message(20, 0, 1, bytes(8))
    with pytest.raises(ValueError):
        list(iter_messages(msg[:-4]))


def test_packet_and_netlink_queues_come_from_memory_even_without_it_asked() -> None:
    # ss shows a packet socket's queued bytes in Recv-Q without -m: so must we.
    from sockscope.netlink.codec import build_attr

    mem = build_attr(sockdiag.PACKET_DIAG_MEMINFO, struct.pack("=9I", 9984, 212992, 8, 0, 0, 0, 0, 0, 0))
    payload = memoryview(sockdiag.PACKET_MSG.pack(17, 3, 3, 4242, 1, 0) + mem)
    sock = sockdiag.parse_packet(payload, "t", {}.get)
    assert (sock.recv_q, sock.send_q, sock.memory) == (9984, 8, None)
    assert sockdiag.parse_packet(payload, "t", {}.get, want_memory=True).memory is not None
    nl = memoryview(sockdiag.NETLINK_MSG.pack(16, 3, 0, 7, 99, 0, 0, 4343, 1, 0)
                    + build_attr(sockdiag.NETLINK_DIAG_MEMINFO, struct.pack("=9I", *range(1, 10))))
    sock = sockdiag.parse_netlink(nl, "t")
    assert (sock.recv_q, sock.send_q, sock.memory) == (1, 3, None)
    request = sockdiag.PACKET_REQ.unpack(sockdiag.packet_request())
    assert request[4] & sockdiag.PACKET_SHOW_MEMINFO
