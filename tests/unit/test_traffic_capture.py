"""The capture source's frame reading and socket matching (traffic/capture_source.py),
on frames and socket lists built here."""

from __future__ import annotations

import socket
import struct

from sockscope.traffic.capture_source import UdpSocket, match, udp_ends

SLL = bytes(14)  # a cooked header's first 14 bytes; the protocol follows


def _v4(src: str, dst: str, sport: int, dport: int, payload: int, fragment: int = 0,
        proto: int = socket.IPPROTO_UDP) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + payload, 1, fragment, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return SLL + b"\x08\x00" + ip + struct.pack("!HHHH", sport, dport, 8 + payload, 0)


def _v6(src: str, dst: str, sport: int, dport: int, payload: int) -> bytes:
    ip = struct.pack("!IHBB16s16s", 6 << 28, 8 + payload, socket.IPPROTO_UDP, 64,
                     socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    return SLL + b"\x86\xdd" + ip + struct.pack("!HHHH", sport, dport, 8 + payload, 0)


def test_udp_frames_give_both_ends_and_the_payload() -> None:
    a, b = socket.inet_aton("198.51.100.1"), socket.inet_aton("198.51.100.2")
    assert udp_ends(_v4("198.51.100.1", "198.51.100.2", 4000, 53, 1000), 16) == (a, 4000, b, 53, 1000)
    six = udp_ends(_v6("2001:db8::1", "2001:db8::2", 5000, 443, 1200)[:16 + 48], 16)  # 64 bytes kept
    assert six is not None and (six[1], six[3], six[4]) == (5000, 443, 1200)
    assert udp_ends(_v4("198.51.100.1", "198.51.100.2", 1, 2, 10, fragment=185), 16) is None  # not first
    assert udp_ends(_v4("198.51.100.1", "198.51.100.2", 1, 2, 10, proto=6), 16) is None
    assert udp_ends(SLL + b"\x08\x06" + bytes(28), 16) is None  # ARP


def test_counts_go_to_the_exact_binding_else_the_any_address() -> None:
    here = socket.inet_aton("198.51.100.1")
    sockets = {7: [UdpSocket(socket.AF_INET, here, 53, bytes(4), 0, 101),
                   UdpSocket(socket.AF_INET, bytes(4), 53, bytes(4), 0, 102),
                   UdpSocket(socket.AF_INET6, bytes(16), 9999, bytes(16), 0, 103)]}
    counts = {(7, False, here, 53): 100, (7, False, socket.inet_aton("127.0.0.1"), 53): 40,
              (7, True, here, 9999): 7, (7, True, here, 1234): 5, (8, True, here, 53): 3}
    assert match(counts, sockets) == {(7, 101): [0, 100], (7, 102): [0, 40], (7, 103): [7, 0]}
