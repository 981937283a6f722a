"""The ``capture`` source: UDP bytes from a header-only capture, where eBPF may
not run (the fallback; README "sockscope top" says how it compares).

Per namespace, an AF_PACKET capture on every interface (``any``: the project's
TPACKET_V3 ring) behind a kernel filter that passes only UDP, keeping 64 bytes
of each frame. A thread drains the rings and adds each datagram's payload (the
UDP length less its 8-byte header; a fragmented datagram counts once, by its
first fragment) to (namespace, direction, local address, local port): the
source of a frame leaving, the destination of one arriving. Each sample maps
these to the namespace's UDP sockets (one sock_diag dump: a socket bound to the
any-address matches every local address) and so to the processes holding them.

What it cannot do: ICMP and raw sockets, traffic no socket owns, and datagrams
the ring had no room for under load (counted in ``dropped`` by the kernel).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sockscope.capture.engine import Capture
from sockscope.capture.packet_socket import RingConfig
from sockscope.errors import SockscopeError
from sockscope.packets.packet import LINKTYPE_LINUX_SLL
from sockscope.platform import linux

from .datagrams import DatagramDelta, add_rows
from .socktrace import SocketBytes

if TYPE_CHECKING:
    from sockscope.inventory.filter import SocketFilter
    from sockscope.inventory.model import Owner

    from .rows import Rows

SNAPLEN: Final = 64  # a cooked header (16), IPv6 (40) and UDP's first 8 bytes
_RING_KIB: Final = 4096
_OUTBOUND: Final = 2  # tpacket Frame.direction
_LOOPBACK: Final = 1  # lo's interface index, in every namespace
_V4: Final = struct.Struct("!B5xHxB")  # version/IHL, flags/fragment offset, protocol
_UDP: Final = struct.Struct("!HHH")  # source port, destination port, length
_ETH_IPV4, _ETH_IPV6 = b"\x08\x00", b"\x86\xdd"
_ANY: Final = {4: bytes(4), 16: bytes(16)}

Key = tuple[int, bool, bytes, int]  # netns inode, sent?, local address (4 or 16 bytes), port


@dataclass(frozen=True, slots=True)
class UdpSocket:
    """What the sock_diag dump says of one UDP socket."""

    family: int
    local: bytes  # 4 or 16 bytes
    local_port: int
    remote: bytes
    remote_port: int
    inode: int


def udp_ends(data: bytes, l3: int) -> tuple[bytes, int, bytes, int, int] | None:
    """(source address, port, destination address, port, payload bytes) of a UDP
    datagram's frame whose network header starts at ``l3``; None for anything
    else (sans-IO)."""
    ethertype = data[l3 - 2:l3]
    if ethertype == _ETH_IPV4:
        if len(data) < l3 + 20:
            return None
        ver_ihl, fragment, protocol = _V4.unpack_from(data, l3)
        if protocol != socket.IPPROTO_UDP or fragment & 0x1FFF:
            return None
        udp = l3 + (ver_ihl & 0x0F) * 4
        source, destination = data[l3 + 12:l3 + 16], data[l3 + 16:l3 + 20]
    elif ethertype == _ETH_IPV6:
        if len(data) < l3 + 40 or data[l3 + 6] != socket.IPPROTO_UDP:
            return None  # (extension headers are not followed)
        udp = l3 + 40
        source, destination = data[l3 + 8:l3 + 24], data[l3 + 24:l3 + 40]
    else:
        return None
    if len(data) < udp + 6:
        return None
    sport, dport, length = _UDP.unpack_from(data, udp)
    return source, sport, destination, dport, max(length - 8, 0)


class UdpCapture:
    """Captures in the namespaces ``watch`` names, drained by one thread."""

    def __init__(self) -> None:
        self._captures: dict[int, Capture] = {}
        self._lock = threading.Lock()
        self._counts: dict[Key, int] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None

    def watch(self, refs: list[linux.NetnsRef]) -> list[str]:
        """Capture in these namespaces (and no others); returns notes on those
        where a capture could not be opened."""
        notes: list[str] = []
        wanted = {ref.inode for ref in refs}
        with self._lock:
            for inode in [i for i in self._captures if i not in wanted]:
                self._captures.pop(inode).close()
            for ref in refs:
                if ref.inode in self._captures:
                    continue
                try:
                    self._captures[ref.inode] = Capture(
                        "any", "udp", snaplen=SNAPLEN, netns=ref.path, promisc=False,
                        ring=RingConfig.for_buffer(_RING_KIB))
                except (OSError, SockscopeError) as exc:
                    notes.append(f"UDP in {ref.name} is not counted: no capture there ({exc})")
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="sockscope-udp-capture", daemon=True)
            self._thread.start()
        return notes

    def _drain(self) -> None:
        while not self._stopping:
            with self._lock:
                for inode, capture in self._captures.items():
                    try:
                        batches = capture.poll(0)
                    except (OSError, SockscopeError):
                        continue  # the interface went away: the next watch() sorts it out
                    l3 = 16 if capture.linktype == LINKTYPE_LINUX_SLL else 14
                    counts = self._counts
                    for _, frames in batches:
                        for frame in frames:
                            ends = udp_ends(frame.data, l3)
                            if ends is None:
                                continue
                            source, sport, destination, dport, nbytes = ends
                            # Loopback frames are seen once, arriving: both ends are here.
                            if frame.direction == _OUTBOUND or frame.ifindex == _LOOPBACK:
                                key = (inode, True, source, sport)
                                counts[key] = counts.get(key, 0) + nbytes
                            if frame.direction != _OUTBOUND:
                                key = (inode, False, destination, dport)
                                counts[key] = counts.get(key, 0) + nbytes
            time.sleep(0.01)

    def take(self) -> dict[Key, int]:
        """The bytes counted since the last call."""
        with self._lock:
            counts, self._counts = self._counts, {}
        return counts

    def close(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for capture in self._captures.values():
                capture.close()
            self._captures.clear()


def match(counts: dict[Key, int], sockets: dict[int, list[UdpSocket]]) -> dict[tuple[int, int], list[int]]:
    """(netns inode, socket inode) -> [sent, received], each count given to the
    namespace's UDP socket bound to its address and port, else to the one bound
    to the any-address on that port; counts no socket matches are dropped."""
    out: dict[tuple[int, int], list[int]] = {}
    index: dict[int, dict[tuple[bytes, int], UdpSocket]] = {}
    for netns, found in sockets.items():
        bound = index[netns] = {}
        for sock in found:
            bound.setdefault((sock.local, sock.local_port), sock)
    for (netns, sent, address, port), nbytes in counts.items():
        table = index.get(netns)
        if table is None:
            continue
        hit = table.get((address, port)) or table.get((_ANY[len(address)], port))
        if hit is None and len(address) == 4:  # an IPv6 socket taking IPv4 too (v4-mapped)
            hit = table.get((_ANY[16], port)) or table.get((b"\0" * 10 + b"\xff\xff" + address, port))
        if hit is None:
            continue
        entry = out.setdefault((netns, hit.inode), [0, 0])
        entry[0 if sent else 1] += nbytes
    return out


def add_captured_rows(rows: Rows, counts: dict[Key, int], sockets: dict[int, list[UdpSocket]],
                      owners: dict[int, Owner], names: dict[int, str], flt: SocketFilter | None,
                      interval: float) -> set[int]:
    """Captured UDP bytes into a sample's rows, each socket's to the process holding
    it (``owners``: socket inode -> holder); returns the pids seen alive."""
    by_inode = {u.inode: u for found in sockets.values() for u in found}
    deltas = []
    for (netns, inode), (tx, rx) in match(counts, sockets).items():
        owner = owners.get(inode)
        if owner is None:  # closed since, or held by a process not looked at
            continue
        u = by_inode[inode]
        entry = SocketBytes(inode, owner.pid, owner.command, netns,
                            "inet" if u.family == socket.AF_INET else "inet6", socket.IPPROTO_UDP,
                            socket.SOCK_DGRAM, socket.inet_ntop(u.family, u.local), u.local_port,
                            socket.inet_ntop(u.family, u.remote) if u.remote_port else None,
                            u.remote_port or None, tx, rx, 0, 0)
        deltas.append(DatagramDelta(entry, "udp", tx, rx))
    return add_rows(rows, deltas, {}, names, flt, interval)
