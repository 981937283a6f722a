"""One engine for every probe: send what the caller built, read whatever comes
back on the receive sockets, match it to the probe it answers, count the rest.

The engine knows sockets and timing; what a reply means is the caller's business:
a ``matcher`` turns each received message into the key of the probe it answers
(or None). Keys are whatever the prober chose to vary per probe (ICMP sequence,
UDP checksum, TCP sequence, destination port...). Everything runs on the asyncio
loop, so many probers can share one process without threads; the sync API wraps
the async one with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sockscope.packets import ICMP, LINKTYPE_RAW, ICMPv6, IPv4, IPv6, Packet, decode, stack
from sockscope.probe import rawio


class Kind(Enum):
    """What a receive socket delivers."""

    IP = "ip"  # whole IPv4 packets (raw IPv4 sockets)
    TRANSPORT6 = "transport6"  # the transport header on (raw IPv6 sockets)
    DATAGRAM = "datagram"  # a datagram socket: payloads, plus ICMP errors on the error queue


# What a matcher returns for a packet we sent ourselves and read back (loopback):
# neither an answer nor foreign, so not counted.
OWN = object()


@dataclass(slots=True)
class Received:
    """One message off a receive socket. ``packet`` is the reply as an IP packet
    (rebuilt around the transport where the socket strips the IP header);
    ``queued`` is set for error-queue entries; ``data`` for datagram payloads."""

    source: str
    time: float
    ttl: int | None = None
    packet: Packet | None = None
    queued: rawio.QueuedError | None = None
    data: bytes = b""
    port: int = 0

    @property
    def icmp(self) -> ICMP | ICMPv6 | None:
        if self.packet is None:
            return None
        return self.packet.get(ICMP) or self.packet.get(ICMPv6)


@dataclass(eq=False, slots=True)
class Probe:
    """One probe in flight: its key, send time, the reply once matched, and the
    caller's own data (hop number, port...)."""

    key: Hashable
    info: Any = None
    sent: float = 0.0
    reply: Received | None = None
    tries: int = 0

    @property
    def rtt_ms(self) -> float | None:
        return None if self.reply is None else (self.reply.time - self.sent) * 1000.0


@dataclass(eq=False)
class Engine:
    family: int
    matcher: Callable[[Received], Hashable | None]
    pending: dict[Hashable, Probe] = field(default_factory=dict)
    ignored: int = 0  # well-formed messages that answer none of our probes
    malformed: int = 0  # messages that do not parse or fail their checksum
    _sockets: list[socket.socket] = field(default_factory=list)
    _answered: list[Probe] = field(default_factory=list)
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()

    def listen(self, sock: socket.socket, kind: Kind, proto: int = 0) -> socket.socket:
        """Read ``sock`` from now on (the engine closes it at the end)."""
        sock.setblocking(False)
        self._sockets.append(sock)
        self._loop.add_reader(sock.fileno(), self._readable, sock, kind, proto)
        return sock

    def own(self, sock: socket.socket) -> socket.socket:
        """Close ``sock`` with the engine (a send-only socket)."""
        self._sockets.append(sock)
        return sock

    def send(self, sock: socket.socket, probe: Probe, data: bytes, address: tuple[Any, ...]) -> None:
        """Send ``data`` and register ``probe`` as waiting. An error an earlier ICMP
        message left pending on the socket is cleared by retrying once or twice."""
        for attempt in range(3):
            try:
                probe.sent = time.monotonic()
                self.pending[probe.key] = probe
                sock.sendto(data, address)
                probe.tries += 1
                return
            except BlockingIOError:
                return  # the queue is full: the probe counts as lost, retransmits cover it
            except OSError as exc:
                if exc.errno not in rawio.PENDING_ERRORS or attempt == 2:
                    self.pending.pop(probe.key, None)
                    raise

    def forget(self, probe: Probe) -> None:
        self.pending.pop(probe.key, None)

    async def wait(self, deadline: float) -> list[Probe]:
        """Probes answered since the last call; waits until one is or ``deadline``."""
        if not self._answered:
            timeout = deadline - time.monotonic()
            if timeout > 0:
                self._event.clear()
                try:
                    await asyncio.wait_for(self._event.wait(), timeout)
                except TimeoutError:
                    pass
        answered, self._answered = self._answered, []
        return answered

    def close(self) -> None:
        for sock in self._sockets:
            if sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
                sock.close()
        self._sockets.clear()

    # -- receiving ------------------------------------------------------------

    def _readable(self, sock: socket.socket, kind: Kind, proto: int) -> None:
        while True:
            try:
                if kind is Kind.DATAGRAM:
                    got = self._read_queued(sock)
                    if got is None:
                        got = self._read_datagram(sock, proto)
                else:
                    got = self._read_raw(sock, kind, proto)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. a pending socket error: the error queue read will report it
            if got is not None:
                self._deliver(got)

    def _deliver(self, got: Received) -> None:
        pkt = got.packet
        if pkt is not None and (pkt.malformed is not None or _bad_checksum(got)):
            self.malformed += 1
            return
        try:
            key = self.matcher(got)
        except (ValueError, KeyError, IndexError, AttributeError):
            key = None  # a quote too short or too strange to read: not ours
        if key is OWN:
            return
        probe = self.pending.pop(key, None) if key is not None else None
        if probe is None:
            self.ignored += 1
            return
        probe.reply = got
        self._answered.append(probe)
        self._event.set()

    def _read_raw(self, sock: socket.socket, kind: Kind, proto: int) -> Received | None:
        data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
        now = time.monotonic()
        if kind is Kind.IP:
            pkt = decode(data, LINKTYPE_RAW)
            ip = pkt.layers[0] if pkt.layers else None
            source = ip.src_ip if isinstance(ip, IPv4) else str(addr[0])
            return Received(source, now, ip.ttl if isinstance(ip, IPv4) else None, pkt)
        ttl = rawio.ttl_from(ancdata)
        return Received(str(addr[0]), now, ttl, self._wrap(str(addr[0]), ttl, proto, data))

    def _read_datagram(self, sock: socket.socket, proto: int) -> Received:
        data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
        now = time.monotonic()
        ttl = rawio.ttl_from(ancdata)
        source = str(addr[0])
        if proto in (socket.IPPROTO_ICMP, socket.IPPROTO_ICMPV6):
            return Received(source, now, ttl, self._wrap(source, ttl, proto, data), port=addr[1])
        return Received(source, now, ttl, data=data, port=addr[1])

    def _read_queued(self, sock: socket.socket) -> Received | None:
        try:
            data, ancdata, _flags, addr = sock.recvmsg(65535, 512, socket.MSG_ERRQUEUE)
        except BlockingIOError:
            return None
        now = time.monotonic()
        queued = rawio.parse_queued_error(ancdata, addr, data)
        if queued is None:
            self.malformed += 1
            return Received("", now)  # matched by nobody, counted once more as ignored
        return Received(queued.offender or "", now, rawio.ttl_from(ancdata), queued=queued)

    def _wrap(self, source: str, ttl: int | None, proto: int, data: bytes) -> Packet:
        """An IP packet around a transport the socket handed over without one, so
        every reply is read the same way."""
        hop = 64 if ttl is None else ttl
        header: IPv4 | IPv6
        if self.family == socket.AF_INET:
            header = IPv4.build(src=source.split("%")[0], dst="0.0.0.0", ttl=hop, proto=proto)
        else:
            header = IPv6.build(src=source.split("%")[0], dst="::", hop_limit=hop, next_header=proto)
        return decode(stack(header, payload=data), LINKTYPE_RAW)


def _bad_checksum(got: Received) -> bool:
    """IPv4 raw sockets see ICMP before the kernel checks it (IPv6 ones only get
    messages the kernel has checked)."""
    icmp = got.icmp
    return isinstance(icmp, ICMP) and icmp.checksum_ok() is False
