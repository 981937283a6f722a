"""One engine for every probe: send what the caller built, read whatever comes
back on the receive sockets, match it to the probe it answers, count the rest.

The engine knows sockets and timing; what a reply means is the caller's business:
a ``matcher`` turns each received message into the key of the probe it answers
(or None). Keys are whatever the prober chose to vary per probe (ICMP sequence,
UDP checksum, TCP sequence, destination port...).

A prober's logic is a generator (sans-IO): it sends through the engine, yields
the time until which it is willing to wait, and is sent back the probes answered
meanwhile. Two drivers run it: `drive` waits in ``select`` (the sync API, which
never imports asyncio: start-up time matters for a traceroute), `adrive` on the
asyncio loop (the async API: many probers in one process, no threads).
"""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import select
import time

from sockscope.packets import ICMP, LINKTYPE_RAW, TCP, Header, ICMPv6, IPv4, IPv6, Packet, decode, stack
from sockscope.probe import rawio

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Hashable
    from typing import Any

    # What a prober generator yields (a deadline) and is sent (the probes answered).
    Steps = Generator[float, list["Probe"], None]


class Kind:
    """What a receive socket delivers (plain constants: enum costs start-up time)."""

    IP = "ip"  # whole IPv4 packets (raw IPv4 sockets)
    TRANSPORT6 = "transport6"  # the transport header on (raw IPv6 sockets)
    DATAGRAM = "datagram"  # a datagram socket: payloads, plus ICMP errors on the error queue
    # A TCP socket connecting (traceroute -M tcpconn): one outcome, an ICMP error from
    # the error queue or the connect's own result; the engine then closes it.
    STREAM = "stream"


# What a matcher returns for a packet we sent ourselves and read back (loopback):
# neither an answer nor foreign, so not counted.
OWN = object()


class Received:
    """One message off a receive socket. ``packet`` is the reply as an IP packet
    (rebuilt around the transport where the socket strips the IP header);
    ``queued`` is set for error-queue entries; ``data`` for datagram payloads.
    (Plain classes here and in ``model``: dataclasses cost a traceroute ~10 ms of
    start-up.)"""

    __slots__ = (
        "_packet",
        "_raw",
        "_transport",
        "connect_errno",
        "data",
        "port",
        "queued",
        "source",
        "time",
        "ttl",
    )

    def __init__(
        self,
        source: str,
        time: float,
        ttl: int | None = None,
        packet: Packet | None = None,
        queued: rawio.QueuedError | None = None,
        data: bytes = b"",
        port: int = 0,
    ) -> None:
        self.source, self.time, self.ttl, self._packet = source, time, ttl, packet
        self.queued, self.data, self.port = queued, data, port
        self._transport: Header | bool | None = False  # False: not looked up yet
        # An IPv4 TCP segment read on the fast path: already checked, decoded on demand.
        self._raw: bytes | None = None
        # A STREAM socket's connect() outcome (0: connected; ``port`` is then our own).
        self.connect_errno: int | None = None

    @property
    def packet(self) -> Packet | None:
        if self._packet is None and self._raw is not None:
            self._packet = decode(self._raw, LINKTYPE_RAW)
        return self._packet

    @classmethod
    def tcp_segment(cls, source: str, time: float, ttl: int, data: bytes, total: int) -> Received:
        """A plain IPv4 TCP segment whose lengths have been checked (see ``_read_raw``):
        a lazy TCP view now, the whole packet decoded only if asked for."""
        got = cls(source, time, ttl)
        got._raw = data
        got._transport = TCP(data, 20, total)
        return got

    @property
    def transport(self) -> Header | None:
        """The layer after the IP header (ICMP, TCP...), if any."""
        layer = self._transport
        if layer is False:
            layers = self.packet.layers if self.packet is not None else ()
            layer = self._transport = layers[1] if len(layers) > 1 else None
        assert layer is not True
        return layer

    @property
    def icmp(self) -> ICMP | ICMPv6 | None:
        layer = self.transport
        return layer if isinstance(layer, ICMP | ICMPv6) else None


class Probe:
    """One probe in flight: its key, send time, the reply once matched, and the
    caller's own data (hop number, port...)."""

    __slots__ = ("info", "key", "reply", "sent", "tries")

    def __init__(self, key: Hashable, info: Any = None) -> None:
        self.key, self.info = key, info
        self.sent = 0.0
        self.reply: Received | None = None
        self.tries = 0

    def __repr__(self) -> str:
        return f"Probe({self.key!r}, {self.info!r}, tries={self.tries}, answered={self.reply is not None})"

    @property
    def rtt_ms(self) -> float | None:
        return None if self.reply is None else (self.reply.time - self.sent) * 1000.0



def drive(engine: Engine, steps: Steps) -> None:
    """Run a prober to the end, waiting in ``select`` (no event loop needed)."""
    try:
        deadline = next(steps)
        while True:
            deadline = steps.send(engine.poll(deadline))
    except StopIteration:
        return


async def adrive(engine: Engine, steps: Steps) -> None:
    """Run a prober to the end on the running asyncio loop."""
    try:
        deadline = next(steps)
        while True:
            deadline = steps.send(await engine.wait(deadline))
    except StopIteration:
        return


class Engine:
    def __init__(
        self, family: int, matcher: Callable[[Received], Hashable | None], timestamps: bool = True
    ) -> None:
        self.family, self.matcher = family, matcher
        self.pending: dict[Hashable, Probe] = {}
        self.ignored = 0  # well-formed messages that answer none of our probes
        self.malformed = 0  # messages that do not parse or fail their checksum
        # Kernel receive timestamps (SO_TIMESTAMPNS) for RTTs that exclude our own
        # latency, as traceroute and ping take them; a scan does without (cheaper reads).
        self.timestamps = timestamps
        self._sockets: list[socket.socket] = []
        self._readers: list[tuple[socket.socket, str, int]] = []
        self._answered: list[Probe] = []
        # Connecting sockets (Kind.STREAM): probe key -> (socket, address connected to).
        self._streams: dict[Hashable, tuple[socket.socket, str]] = {}
        self._loop: Any = None  # the asyncio loop, once `wait` has been awaited
        self._event: Any = None  # an asyncio.Event set when a probe is answered

    def listen(self, sock: socket.socket, kind: str, proto: int = 0) -> socket.socket:
        """Read ``sock`` from now on (the engine closes it at the end)."""
        sock.setblocking(False)
        if self.timestamps:
            sock.setsockopt(socket.SOL_SOCKET, rawio.SO_TIMESTAMPNS, 1)
        self._sockets.append(sock)
        self._readers.append((sock, kind, proto))
        if self._loop is not None:
            self._watch(sock, kind, proto)
        return sock

    def connect(self, sock: socket.socket, probe: Probe, address: tuple[Any, ...]) -> None:
        """Start a non-blocking connect() as ``probe``; its outcome is the reply
        (Kind.STREAM). The socket is closed once it has one, or the probe is forgotten."""
        self.listen(sock, Kind.STREAM)
        self._streams[probe.key] = (sock, str(address[0]))
        probe.sent = time.monotonic()
        self.pending[probe.key] = probe
        try:
            sock.connect(address)
        except BlockingIOError:
            pass  # EINPROGRESS: the outcome comes later
        except OSError:
            self.forget(probe)
            raise
        probe.tries += 1

    def drop(self, sock: socket.socket) -> None:
        """Stop reading ``sock`` and close it (done again, nothing happens)."""
        self._readers = [r for r in self._readers if r[0] is not sock]
        if sock in self._sockets:
            self._sockets.remove(sock)
        if sock.fileno() >= 0:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(sock.fileno())
                self._loop.remove_writer(sock.fileno())
            sock.close()

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

    def expect(self, probe: Probe) -> None:
        """Wait for (another) answer to ``probe`` without sending anything: how ping
        catches duplicate replies."""
        self.pending[probe.key] = probe

    def answer(self, probe: Probe, got: Received) -> None:
        """Answer ``probe`` with ``got`` from here (e.g. the kernel's own refusal to
        send it); it comes with the next `poll`/`wait` like any reply."""
        self.pending.pop(probe.key, None)
        probe.reply = got
        self._answered.append(probe)
        if self._event is not None:
            self._event.set()

    def forget(self, probe: Probe) -> None:
        self.pending.pop(probe.key, None)
        stream = self._streams.pop(probe.key, None)
        if stream is not None:
            self.drop(stream[0])

    def poll(self, deadline: float) -> list[Probe]:
        """Probes answered since the last call; waits in ``select`` until one is or
        ``deadline`` (time.monotonic) passes."""
        while not self._answered:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            self._read_ready(timeout)
        answered, self._answered = self._answered, []
        return answered

    def read_ready(self) -> None:
        """Read what has arrived, without waiting; the probes it answers come with
        the next `poll`/`wait`. A prober sending a burst calls this between sends:
        until the kernel's receive timestamps are switched on (it does that lazily,
        a little after the first socket asks), a reply is stamped when read, and one
        left queued behind the burst would show an RTT, and make later waits, too long."""
        self._read_ready(0.0)

    def _read_ready(self, timeout: float) -> None:
        # Connecting stream sockets (trace -T without CAP_NET_RAW) report the
        # outcome of their connect as writable.
        streams = [r[0] for r in self._readers if r[1] == Kind.STREAM]
        ready, done, _ = select.select([r[0] for r in self._readers], streams, [], timeout)
        for sock, kind, proto in list(self._readers):
            if sock in ready or sock in done:
                self._readable(sock, kind, proto)

    async def wait(self, deadline: float) -> list[Probe]:
        """`poll` for the asyncio loop: the sockets are read by loop callbacks."""
        import asyncio

        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
            for sock, kind, proto in self._readers:
                self._watch(sock, kind, proto)
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

    def _watch(self, sock: socket.socket, kind: str, proto: int) -> None:
        self._loop.add_reader(sock.fileno(), self._readable, sock, kind, proto)
        if kind == Kind.STREAM:  # a connect that succeeds makes the socket writable only
            self._loop.add_writer(sock.fileno(), self._readable, sock, kind, proto)

    def close(self) -> None:
        for sock in self._sockets:
            if sock.fileno() >= 0:
                if self._loop is not None and not self._loop.is_closed():
                    self._loop.remove_reader(sock.fileno())
                    self._loop.remove_writer(sock.fileno())
                sock.close()
        self._sockets.clear()
        self._readers.clear()

    # -- receiving ------------------------------------------------------------

    def _readable(self, sock: socket.socket, kind: str, proto: int) -> None:
        if kind == Kind.STREAM:
            import errno  # here: not on the path of every other read

            key = next((k for k, (s, _a) in self._streams.items() if s is sock), None)
            if key is None:
                self.drop(sock)
                return
            got = self._read_queued(sock) or _connect_outcome(sock, self._streams[key][1])
            if got is None:
                return  # still connecting
            # One outcome per connect: the socket has done its work. Any other error
            # than a refusal, with nothing queued, leaves the probe unanswered.
            del self._streams[key]
            self.drop(sock)
            if got.queued is not None or got.connect_errno in (0, errno.ECONNREFUSED):
                self._deliver(got, key)
            return
        while True:
            try:
                if kind == Kind.DATAGRAM:
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

    def _deliver(self, got: Received, key: Hashable | None = None) -> None:
        """Hand ``got`` to the probe it answers: ``key``'s if known (a socket of
        its own), else the one the matcher names."""
        pkt = got._packet  # None on the fast path: those lengths are checked already
        if pkt is not None and (pkt.malformed is not None or _bad_checksum(got)):
            self.malformed += 1
            return
        if key is None:
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
        if got.time < probe.sent:
            # A kernel stamp before the send: some paths (veth between namespaces)
            # carry a timestamp taken elsewhere. Our own clock is then the honest one.
            got.time = time.monotonic()
        probe.reply = got
        self._answered.append(probe)
        if self._event is not None:
            self._event.set()

    def _read_raw(self, sock: socket.socket, kind: str, proto: int) -> Received | None:
        if kind == Kind.IP:  # the header says it all: the cheapest read will do
            if self.timestamps:
                data, ancdata, _flags, _addr = sock.recvmsg(65535, 256)
                now = _arrival(ancdata)
            else:
                data = sock.recv(65535)
                now = time.monotonic()
            # The replies a SYN scan gets by the ten thousand: a plain IPv4 header (IHL 5,
            # not a fragment) and a TCP header that fit the total length -- exactly what
            # the decoder would accept -- skip building the layers.
            n = len(data)
            if n >= 40 and data[0] == 0x45 and data[9] == 6 and not (data[6] & 0x3F or data[7]):
                total = data[2] << 8 | data[3]
                if total == n and 20 <= (data[32] >> 4) * 4 <= n - 20:
                    return Received.tcp_segment(socket.inet_ntoa(data[12:16]), now, data[8], data, total)
            pkt = decode(data, LINKTYPE_RAW)
            layers = pkt.layers
            ip = layers[0] if layers else None
            if isinstance(ip, IPv4):
                return Received(ip.src_ip, now, ip.ttl, pkt)
            return Received("", now, None, pkt)
        data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
        now = _arrival(ancdata)
        ttl = rawio.ttl_from(ancdata)
        return Received(str(addr[0]), now, ttl, self._wrap(str(addr[0]), ttl, proto, data))

    def _read_datagram(self, sock: socket.socket, proto: int) -> Received:
        data, ancdata, _flags, addr = sock.recvmsg(65535, 256)
        now = _arrival(ancdata)
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
        now = _arrival(ancdata)
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


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """When the message arrived, on the monotonic clock: the kernel's timestamp if
    there is one (it is wall-clock time, so shifted by the clocks' offset now)."""
    now = time.monotonic()
    stamp = rawio.timestamp_from(ancdata)
    if stamp is None:
        return now
    return min(now, now - (time.time() - stamp))


def _connect_outcome(sock: socket.socket, address: str) -> Received | None:
    """How a non-blocking connect() to ``address`` ended (None: not yet). Read after
    the error queue: reading that clears the socket error an ICMP error set."""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err == 0:
        try:
            sock.getpeername()
        except OSError:
            return None  # still connecting
    got = Received(address, time.monotonic(), port=sock.getsockname()[1])
    got.connect_errno = err
    return got


def _bad_checksum(got: Received) -> bool:
    """IPv4 raw sockets see ICMP before the kernel checks it (IPv6 ones only get
    messages the kernel has checked)."""
    icmp = got.icmp
    return isinstance(icmp, ICMP) and icmp.checksum_ok() is False
