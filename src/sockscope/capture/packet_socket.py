"""The Linux edge of capture: AF_PACKET sockets with a TPACKET_V3 ring, and sending.

Opening order matters for "no unfiltered packet leaks in at start": the socket is
created with protocol 0, which receives nothing; the ring and the BPF program are set
up; only then does ``bind`` with ETH_P_ALL start the flow. So the very first packet
queued has been through the filter, without libpcap's drain-with-a-reject-all-filter
dance (which it needs because it opens with ETH_P_ALL).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from sockscope.capture import tpacket
from sockscope.capture.bpf import BpfProgram
from sockscope.errors import PermissionNeeded, SockscopeError, UsageError

# <linux/if_ether.h>, <linux/if_packet.h>; Python lacks most of them.
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_QDISC_BYPASS = 20

FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "random": 4, "qm": 5}
PACKET_FANOUT_FLAG_DEFRAG = 0x8000

# ARPHRD types whose frames start with an Ethernet header (<linux/if_arp.h>).
_ETHERNET_LIKE = {1, 6, 772}  # ETHER, IEEE802, LOOPBACK
ARPHRD_LOOPBACK = 772


@dataclass(frozen=True, slots=True)
class RingConfig:
    """The receive ring: ``block_nr`` blocks of ``block_size`` bytes; a block goes to
    user space when full or ``block_timeout_ms`` after its first packet."""

    block_size: int = 1 << 20
    block_nr: int = 64
    block_timeout_ms: int = 10

    @classmethod
    def for_buffer(cls, buffer_kib: int, block_timeout_ms: int = 10) -> RingConfig:
        """A ring of about ``buffer_kib`` KiB (tcpdump's -B): blocks of up to 1 MiB,
        at least 8 of them so the kernel always has a free block to fill."""
        total = max(buffer_kib, 64) * 1024
        block = 1 << 20
        while block > 64 * 1024 and total // block < 8:
            block //= 2
        return cls(block, max(total // block, 2), block_timeout_ms)

    @property
    def size(self) -> int:
        return self.block_size * self.block_nr


def link_info(ifname: str, purpose: str = "capture") -> tuple[int, int]:
    """(ifindex, ARPHRD type) of ``ifname`` in the calling thread's namespace.

    A bind with protocol 0 resolves the name without receiving anything.
    ``purpose`` names the job in the message when the capability is missing.
    """
    try:
        probe = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as e:
        raise PermissionNeeded(f"{purpose} needs CAP_NET_RAW (run as root)") from e
    with probe:
        try:
            probe.bind((ifname, 0))
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.EINVAL):
                raise UsageError(f"no such interface: {ifname}") from e
            raise SockscopeError(f"interface {ifname}: {e.strerror}") from e
        _name, _proto, _pkttype, hatype, _addr = probe.getsockname()
    return socket.if_nametoindex(ifname), hatype


def _bind_ll(sock: socket.socket, ifindex: int, protocol: int) -> None:
    """bind() with a raw sockaddr_ll: Python's tuple form looks the interface up by
    name and so cannot say "ifindex 0" (every interface, for -i any)."""
    import ctypes

    addr = struct.pack("=HHiHBB8s", socket.AF_PACKET, socket.htons(protocol), ifindex, 0, 0, 0, b"")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.bind(sock.fileno(), ctypes.c_char_p(addr), len(addr)) != 0:
        err = ctypes.get_errno()
        raise SockscopeError(f"cannot bind the capture socket: {os.strerror(err)}")


def is_ethernet(hatype: int) -> bool:
    return hatype in _ETHERNET_LIKE


class RingSocket:
    """One AF_PACKET socket bound to one interface (ifindex 0: all), with its ring."""

    def __init__(
        self,
        ifindex: int,
        cooked: bool,
        ring: RingConfig,
        program: BpfProgram,
        promisc: bool = True,
        fanout: tuple[int, str] | None = None,
    ) -> None:
        self.ifindex = ifindex
        self.cooked = cooked
        self.ring = ring
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        try:
            self.sock = socket.socket(socket.AF_PACKET, kind, 0)  # protocol 0: nothing flows yet
        except PermissionError as e:
            raise PermissionNeeded("capture needs CAP_NET_RAW (run as root)") from e
        try:
            self._setup(program, promisc, fanout)
        except BaseException:
            self.sock.close()
            raise
        self.block = 0  # the next block to read, in ring order

    def _setup(self, program: BpfProgram, promisc: bool, fanout: tuple[int, str] | None) -> None:
        sock, ring = self.sock, self.ring
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, tpacket.TPACKET_V3)
        program.attach(sock)
        try:
            sock.setsockopt(
                SOL_PACKET,
                PACKET_RX_RING,
                tpacket.ring_request(ring.block_size, ring.block_nr, ring.block_timeout_ms),
            )
        except OSError as e:
            raise SockscopeError(f"cannot set up a {ring.size >> 10} KiB capture ring: {e.strerror}") from e
        self.map = mmap.mmap(sock.fileno(), ring.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.view = memoryview(self.map)
        _bind_ll(sock, self.ifindex, ETH_P_ALL)
        if promisc and self.ifindex:
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if fanout is not None:
            group, mode = fanout
            if mode not in FANOUT_MODES:
                raise UsageError(f"unknown fanout mode {mode!r} (one of {', '.join(FANOUT_MODES)})")
            arg = (group & 0xFFFF) | (FANOUT_MODES[mode] | PACKET_FANOUT_FLAG_DEFRAG) << 16
            try:
                sock.setsockopt(SOL_PACKET, PACKET_FANOUT, struct.pack("=I", arg))
            except OSError as e:
                raise SockscopeError(f"cannot join fanout group {group} ({mode}): {e.strerror}") from e

    def fileno(self) -> int:
        return self.sock.fileno()

    def ready_blocks(self) -> list[list[tpacket.Frame]]:
        """Take the blocks the kernel has handed over, in order, and give them back."""
        out: list[list[tpacket.Frame]] = []

        def take(view: memoryview, offset: int) -> int:
            frames = tpacket.block_frames(view, offset, self.cooked)
            out.append(frames)
            return len(frames)

        self.consume_ready(take)
        return out

    def consume_ready(self, handle: Callable[[memoryview, int], int]) -> int:
        """Hand each ready block (the ring and the block's offset) to ``handle``, which
        returns its packet count, and give the block back; return the total.

        At most one ring's worth per call: under a flood the kernel refills blocks as
        fast as they are given back, and the caller must still get to its stop flag,
        its other rings and its output.
        """
        total = 0
        view, size, nr = self.view, self.ring.block_size, self.ring.block_nr
        for _ in range(nr):
            offset = self.block * size
            if not tpacket.block_ready(view, offset):
                break
            total += handle(view, offset)
            tpacket.release_block(view, offset)
            self.block = (self.block + 1) % nr
        return total

    def statistics(self) -> tuple[int, int]:
        """(received, dropped) since the previous call; the kernel resets on each read."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, tpacket.STATS_V3.size)
        packets, drops, _freeze = tpacket.STATS_V3.unpack(raw)
        return packets, drops

    def pending_error(self) -> int:
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def close(self) -> None:
        view = getattr(self, "view", None)
        if view is not None:
            view.release()
            self.map.close()
        self.sock.close()


def open_sender(ifname: str, bypass_qdisc: bool = False) -> socket.socket:
    """A packet socket that sends whole frames out of ``ifname`` (SOCK_RAW, protocol 0:
    it receives nothing)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as e:
        raise PermissionNeeded("sending frames needs CAP_NET_RAW (run as root)") from e
    try:
        sock.bind((ifname, 0))
    except OSError as e:
        sock.close()
        raise UsageError(f"no such interface: {ifname}") from e
    if bypass_qdisc:
        sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    return sock
