"""Live capture: one AF_PACKET socket and ring per interface, read in one poll loop.

``Capture.poll()`` hands over whole ring blocks as lists of ``tpacket.Frame`` tuples
(the fast path that ``capture -w`` writes straight to a file); iterating a Capture
gives ``CapturedPacket`` objects whose layers decode only when asked.
"""

from __future__ import annotations

import errno
import functools
import os
import select
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

from sockscope.capture import bpf, packet_socket, tpacket
from sockscope.capture.packet import CapturedPacket
from sockscope.capture.packet_socket import RingConfig, RingSocket
from sockscope.errors import SockscopeError, UsageError
from sockscope.packets.packet import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL
from sockscope.platform.linux import current_netns, in_netns, resolve_netns

ANY = "any"
# (interface id, the ring, offset of a ready block) -> packets taken from the block
BlockHandler = Callable[[int, memoryview, int], int]
DIRECTIONS = ("in", "out", "inout")


def _loopback_index() -> int | None:
    try:
        return socket.if_nametoindex("lo")
    except OSError:
        return None


class CaptureError(SockscopeError):
    """The capture could not go on (an interface went down or away)."""


@dataclass(frozen=True, slots=True)
class CaptureInterface:
    """What one ring captures: ``index`` 0 means every interface (``-i any``)."""

    name: str
    index: int
    linktype: int
    netns: str
    filter: str
    snaplen: int


@dataclass(slots=True)
class CaptureStats:
    """Counters as tcpdump prints them: ``captured`` handed to the program,
    ``received`` accepted by the filter (captured, queued or dropped), ``dropped``
    by the kernel because the ring was full."""

    interface: str
    captured: int = 0
    received: int = 0
    dropped: int = 0


class Capture:
    """Capture on ``interfaces`` (names; "any" for all) in namespace ``netns``.

    ``filter`` is a tcpdump expression (compiled by libpcap, attached in the kernel
    before the first packet is queued). ``direction`` is "in", "out" or "inout"
    (tcpdump -Q). ``fanout`` = (group id, mode) joins a PACKET_FANOUT group so that
    several captures (processes) share the load.
    """

    def __init__(
        self,
        interfaces: str | Sequence[str] = ANY,
        filter: str = "",
        *,
        snaplen: int = 262144,
        ring: RingConfig | None = None,
        promisc: bool = True,
        direction: str = "inout",
        netns: str | None = None,
        fanout: tuple[int, str] | None = None,
        count: int | None = None,
        duration: float | None = None,
    ) -> None:
        if count is not None and count <= 0:
            raise UsageError(f"count must be positive, not {count}")
        if duration is not None and duration <= 0:
            raise UsageError(f"duration must be positive, not {duration}")
        self.count = count
        self.duration = duration
        names = [interfaces] if isinstance(interfaces, str) else list(interfaces)
        if not names:
            raise UsageError("no interface to capture on")
        if len(set(names)) != len(names):
            raise UsageError("an interface is given twice")
        if ANY in names and len(names) > 1:
            raise UsageError("-i any already captures on every interface")
        if direction not in DIRECTIONS:
            raise UsageError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
        if not 1 <= snaplen <= 262144:
            raise UsageError(f"snapshot length {snaplen} out of range 1..262144")
        self.filter = filter
        self.snaplen = snaplen
        self.ring_config = ring or RingConfig()
        self.interfaces: list[CaptureInterface] = []
        self.error: CaptureError | None = None
        self._ifnames: dict[int, str] = {}
        self._rings: list[RingSocket] = []
        self._stats: list[CaptureStats] = []
        self._stopping = False
        self._user_filter: bpf.BpfProgram | None = None
        self._raw: BlockHandler | None = None
        self._remaining: int | None = None  # packets the current iteration may still give
        self._poller: select.poll | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        ref = resolve_netns(netns) if netns else None
        try:
            with in_netns(ref):
                self._ns_ref = ref or current_netns()
                self._open(names, promisc, direction, fanout)
        except BaseException:
            self.close()
            raise

    def _open(self, names: list[str], promisc: bool, direction: str, fanout: tuple[int, str] | None) -> None:
        links = {name: (0, 0) if name == ANY else packet_socket.link_info(name) for name in names}
        # One link type for all, so the capture fits one pcap file that tcpdump reads:
        # Ethernet when every interface is Ethernet-like, else cooked (SLL) everywhere.
        cooked = any(
            name == ANY or not packet_socket.is_ethernet(hatype) for name, (_, hatype) in links.items()
        )
        linktype = LINKTYPE_LINUX_SLL if cooked else LINKTYPE_ETHERNET
        program = (
            bpf.compile_filter(self.filter, linktype, self.snaplen)
            if self.filter
            else bpf.accept_all(self.snaplen)
        )
        if cooked:
            kernel_ready = bpf.for_cooked_socket(program)
            if kernel_ready is None:  # a test of SLL fields the kernel cannot make
                self._user_filter = program
                kernel_ready = bpf.accept_all(max(self.snaplen - 16, 1))
            program = kernel_ready
        netns_name = self._ns_ref.name
        for name, (index, hatype) in links.items():
            keep_in = direction in ("in", "inout")
            # Loopback shows each packet twice, leaving and arriving: keep the arrival
            # (as libpcap does) unless only outgoing packets are asked for.
            keep_out = direction == "out" or (
                direction == "inout" and hatype != packet_socket.ARPHRD_LOOPBACK
            )
            lo_index = _loopback_index() if name == ANY and direction == "inout" else None
            kernel_program = bpf.with_direction(program, keep_in, keep_out, lo_index)
            ring = RingSocket(index, cooked, self.ring_config, kernel_program, promisc, fanout)
            self._rings.append(ring)
            self.interfaces.append(
                CaptureInterface(name, index, linktype, netns_name, self.filter, self.snaplen)
            )
            self._stats.append(CaptureStats(name))

    @property
    def linktype(self) -> int:
        return self.interfaces[0].linktype

    @property
    def stopped(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Ask the loop to end; safe from a signal handler or another thread."""
        self._stopping = True
        self.wake()

    def wake(self) -> None:
        """Make a waiting ``poll`` return now (it drains the wake-up bytes)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def poll(
        self, timeout: float | None = None, raw: BlockHandler | None = None
    ) -> list[tuple[int, list[tpacket.Frame]]]:
        """Wait up to ``timeout`` seconds (None: until something happens) for ring
        blocks; return them as (interface id, frames) in ring order. Empty when the
        timeout expired or ``stop()`` was called.

        ``raw(interface_id, ring, offset) -> packets`` takes whole blocks of the rings
        whose frames need no rework (not cooked, no user-space filter) straight from
        the ring, as ``capture -w`` does; only the other rings' frames are returned.
        """
        self._raw = raw
        out = self._take()
        if out or self._stopping:
            return out
        if self._poller is None:  # the rings are fixed once open: register them once
            self._poller = select.poll()
            for ring in self._rings:
                self._poller.register(ring.fileno(), select.POLLIN | select.POLLERR)
            self._poller.register(self._wake_r, select.POLLIN)
        try:
            events = self._poller.poll(None if timeout is None else max(int(timeout * 1000), 0))
        except InterruptedError:
            events = []
        if any(fd == self._wake_r for fd, _ in events):
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        failed = [fd for fd, ev in events if ev & (select.POLLERR | select.POLLHUP) and fd != self._wake_r]
        out = self._take()
        if failed and not out:
            self._raise_pending(failed)
        return out

    def drain(self, raw: BlockHandler | None = None) -> list[tuple[int, list[tpacket.Frame]]]:
        """After ``stop()``: wait one block timeout, so the block being filled when the
        stop came is handed over, and take what the rings hold."""
        if self._rings:
            time.sleep(self.ring_config.block_timeout_ms / 1000 + 0.005)
        self._raw = raw
        return self._take()

    def _take(self) -> list[tuple[int, list[tpacket.Frame]]]:
        out: list[tuple[int, list[tpacket.Frame]]] = []
        raw = self._raw
        for iid, ring in enumerate(self._rings):
            if raw is not None and not ring.cooked and self._user_filter is None:
                self._stats[iid].captured += ring.consume_ready(functools.partial(raw, iid))
                continue
            for frames in ring.ready_blocks():
                if self._user_filter is not None:
                    match = self._user_filter.matches
                    frames = [f for f in frames if match(f.data, f.wirelen)]
                if frames:
                    self._stats[iid].captured += len(frames)
                    out.append((iid, frames))
        return out

    def _raise_pending(self, fds: list[int]) -> None:
        for iid, ring in enumerate(self._rings):
            if ring.fileno() in fds:
                err = ring.pending_error()
                if err:
                    name = self.interfaces[iid].name
                    what = "went down" if err == errno.ENETDOWN else f"failed: {os.strerror(err)}"
                    self.error = CaptureError(f"interface {name} {what}")
                    self._stopping = True
                    raise self.error

    def statistics(self) -> list[CaptureStats]:
        """Counters per interface so far (the kernel's are read and accumulated)."""
        for ring, stats in zip(self._rings, self._stats, strict=True):
            try:
                received, dropped = ring.statistics()
            except OSError:
                continue
            stats.received += received
            stats.dropped += dropped
        return [CaptureStats(s.interface, s.captured, s.received, s.dropped) for s in self._stats]

    def ifname(self, ifindex: int) -> str:
        """The name of interface ``ifindex`` in the capture's namespace (for ``-i any``)."""
        name = self._ifnames.get(ifindex)
        if name is None:
            with in_netns(self._ns_ref):
                self._ifnames = {i: n for i, n in socket.if_nameindex()}
            name = self._ifnames.setdefault(ifindex, f"if{ifindex}")
        return name

    def packets(self) -> Iterator[CapturedPacket]:
        """The packets, as they come; ends at ``count`` packets, after ``duration``
        seconds, or on ``stop()``."""
        self._remaining = self.count
        deadline = None if self.duration is None else time.monotonic() + self.duration
        while not self._stopping and self._remaining != 0:
            timeout = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            if timeout <= 0:
                return
            yield from self._counted(self.poll(timeout))

    __iter__ = packets

    def _counted(self, batches: list[tuple[int, list[tpacket.Frame]]]) -> Iterator[CapturedPacket]:
        """The batches' packets, stopping when ``count`` packets have been given."""
        for iid, frames in batches:
            iface = self.interfaces[iid]
            for frame in frames:
                if self._remaining == 0:
                    return
                yield CapturedPacket.from_frame(frame, iface, iid, self)
                if self._remaining is not None:
                    self._remaining -= 1

    async def apackets(self) -> AsyncIterator[CapturedPacket]:
        """The packets, for ``async for``: waits through the event loop, never blocks
        it. Ends as ``packets()`` does."""
        import asyncio  # only for async users: it costs tens of milliseconds to import

        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        fds = [ring.fileno() for ring in self._rings] + [self._wake_r]
        for fd in fds:
            loop.add_reader(fd, ready.set)
        self._remaining = self.count
        deadline = None if self.duration is None else time.monotonic() + self.duration
        try:
            while not self._stopping and self._remaining != 0:
                batches = self.poll(0)
                if not batches:
                    ready.clear()
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    try:
                        await asyncio.wait_for(ready.wait(), left)
                    except TimeoutError:
                        return
                    continue
                for pkt in self._counted(batches):
                    yield pkt
        finally:
            for fd in fds:
                loop.remove_reader(fd)

    __aiter__ = apackets

    def close(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings = []
        self._poller = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
