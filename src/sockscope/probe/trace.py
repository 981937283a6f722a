"""traceroute: UDP (default), ICMP echo or TCP SYN probes with a fixed flow
identifier (Paris traceroute), many TTLs in flight at once and Linux
traceroute's adaptive waits. Without CAP_NET_RAW, UDP probes go through an
ordinary socket and the ICMP errors are read from its error queue (tracepath).

    result = sockscope.trace("2001:db8:3::2", method="icmp")
    results = await asyncio.gather(*(sockscope.probe.atrace(h) for h in hosts))
"""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import errno
import os
import time

from sockscope.errors import PermissionNeeded, UsageError
from sockscope.probe import flows, rawio
from sockscope.probe.common import sockaddr
from sockscope.probe.engine import Engine, Kind, Probe, Received, adrive, drive
from sockscope.probe.matching import UDP_ANSWER, TraceMatcher, describe
from sockscope.probe.records import TraceHop, TraceProbe
from sockscope.probe.resolve import (
    IP_HEADER,
    check_int,
    check_number,
    check_positive,
    check_range,
    check_size,
    resolve,
    reverse_name,
    source_address,
)

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from typing import Any

    from sockscope.probe.engine import Steps
    from sockscope.probe.model import TraceResult

METHODS = ("udp", "icmp", "tcp")
DEFAULT_PORT = {"udp": 33434, "tcp": 80, "icmp": None}
HEADER = {"udp": flows.UDP_HEADER, "icmp": flows.ICMP_HEADER, "tcp": flows.TCP_HEADER + flows.SYN_OPTIONS}

WAIT_PRECISION = 0.001  # added to an RTT before scaling it, as traceroute does


def trace(
    host: str,
    *,
    method: str = "udp",
    port: int | None = None,
    queries: int = 3,
    first_ttl: int = 1,
    max_ttl: int = 30,
    wait: float = 5.0,
    here: float = 3.0,
    near: float = 10.0,
    parallel: int = 16,
    packet_len: int | None = None,
    tos: int = 0,
    family: int | None = None,
    names: bool = False,
    dont_fragment: bool = False,
    source: str | None = None,
    interface: str | None = None,
    on_hop: Callable[[TraceHop], None] | None = None,
    on_start: Callable[[TraceRun], None] | None = None,
) -> TraceResult:
    """Trace the path to ``host`` with ``method`` probes ("udp", "icmp" or "tcp";
    ``port`` defaults to 33434 for UDP, 80 for TCP): TTLs ``first_ttl``..``max_ttl``,
    ``queries`` probes each, at most ``parallel`` in flight. A probe is given up
    after ``wait`` s, or ``here`` times the RTT of an answer from its hop, or
    ``near`` times that of a later hop (0 disables either), as Linux traceroute
    does. ``packet_len``: whole probe packets (default 60 bytes for IPv4, 80 for
    IPv6; larger than the path MTU is fragmented by the kernel, as for traceroute,
    unless ``dont_fragment``: then a router's "fragmentation needed" / "packet too
    big", or the kernel's own refusal, is marked ``!F-MTU`` and ends the trace);
    ``tos``: the TOS / traffic class; ``source``: an address of this host to send
    from, ``interface``: an interface to send through; ``family``: AF_INET or
    AF_INET6 to pick one for a name; ``names``: reverse lookups. ``on_start`` gets the trace's
    state once the sockets are open, ``on_hop`` each hop, in order, as soon as it
    is complete. Bad arguments raise `UsageError`."""
    run = trace_run(**_options(locals()))
    from sockscope.probe.model import TraceResult

    return TraceResult(**run.fields())


async def atrace(
    host: str,
    *,
    method: str = "udp",
    port: int | None = None,
    queries: int = 3,
    first_ttl: int = 1,
    max_ttl: int = 30,
    wait: float = 5.0,
    here: float = 3.0,
    near: float = 10.0,
    parallel: int = 16,
    packet_len: int | None = None,
    tos: int = 0,
    family: int | None = None,
    names: bool = False,
    dont_fragment: bool = False,
    source: str | None = None,
    interface: str | None = None,
    on_hop: Callable[[TraceHop], None] | None = None,
    on_start: Callable[[TraceRun], None] | None = None,
) -> TraceResult:
    """`trace` for asyncio programs: many traces can run at once, no threads."""
    run, tracer, steps = prepare(**_options(locals()))
    try:
        await adrive(tracer.engine, steps)
    finally:
        _finish(run, tracer, steps)
    from sockscope.probe.model import TraceResult

    return TraceResult(**run.fields())


def trace_run(host: str, **options: Any) -> TraceRun:
    """`trace` without building its dataclass: what ``sockscope trace`` prints
    from, since importing ``dataclasses`` would cost every traceroute 12 ms."""
    run, tracer, steps = prepare(host, **options)
    try:
        drive(tracer.engine, steps)
    finally:
        _finish(run, tracer, steps)
    return run


def _options(given: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in given.items() if not name.startswith("_")}


def _finish(run: TraceRun, tracer: _Tracer, steps: Steps) -> None:
    steps.close()
    run.ignored, run.malformed = tracer.engine.ignored, tracer.engine.malformed
    tracer.engine.close()


class TraceRun:
    """A trace's state while it runs: the fields of `TraceResult`, in a plain class."""

    def __init__(
        self, destination: str, address: str, method: str, port: int | None, packet_size: int, max_ttl: int
    ) -> None:
        self.destination, self.address = destination, address
        self.method = method
        self.port, self.packet_size, self.max_ttl = port, packet_size, max_ttl
        self.hops: list[TraceHop] = []
        self.reached = False
        self.ignored = 0
        self.malformed = 0
        self.unprivileged = False
        self.notes: list[str] = []
        self.fallback: str | None = None
        self.elapsed_ms = 0.0
        self.path_mtu: int | None = None

    def fields(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prepare(
    host: str,
    *,
    method: str = "udp",
    port: int | None = None,
    queries: int = 3,
    first_ttl: int = 1,
    max_ttl: int = 30,
    wait: float = 5.0,
    here: float = 3.0,
    near: float = 10.0,
    parallel: int = 16,
    packet_len: int | None = None,
    tos: int = 0,
    family: int | None = None,
    names: bool = False,
    dont_fragment: bool = False,
    source: str | None = None,
    interface: str | None = None,
    on_hop: Callable[[TraceHop], None] | None = None,
    on_start: Callable[[TraceRun], None] | None = None,
) -> tuple[TraceRun, _Tracer, Steps]:
    """Check the options and open the sockets of a trace. It will probe TTLs
    ``first_ttl``..``max_ttl`` with ``queries`` probes each, at most ``parallel`` in
    flight. A probe is given up after ``wait`` s, or ``here`` times the RTT of an
    answer from its hop, or ``near`` times that of a later hop (0 disables either).
    ``on_hop`` gets each hop, in order, as soon as it is complete."""
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r} (use {', '.join(METHODS)})")
    check_range("first TTL", first_ttl, 1, 255)
    check_range("max TTL", max_ttl, 1, 255)
    if first_ttl > max_ttl:
        raise UsageError(f"first TTL {first_ttl} is beyond the max TTL {max_ttl}")
    check_range("probes per hop", queries, 1, 10)
    check_range("parallel probes", parallel, 1, 255)
    check_range("TOS", tos, 0, 255)
    check_positive("wait", wait)
    for what, where in (("source", source), ("interface", interface)):
        if where is not None and (not isinstance(where, str) or not where):
            raise UsageError(f"{what} must be an address or a name, not {where!r}")
    if check_number("wait factor", here) < 0 or check_number("wait factor", near) < 0:
        raise UsageError("wait factors must not be negative")
    dport = DEFAULT_PORT[method] if port is None else check_range("port", port, 1, 65535)
    fam, address = resolve(host, family)
    ip_len = IP_HEADER[fam]
    default_len = 60 if fam == socket.AF_INET else 80
    total = default_len if packet_len is None else check_int("packet length", packet_len)
    least = ip_len + HEADER[method] + (0 if method == "tcp" else 2)
    if total < least:
        raise UsageError(f"packet length {total} too small (at least {least})")
    check_size(fam, total - ip_len - HEADER[method], HEADER[method])
    result = TraceRun(host, address, method, dport, total, max_ttl)
    how = _How(tos, "probe" if dont_fragment else "dont", source, interface)
    tracer = _Tracer(fam, address, method, dport, total - ip_len - HEADER[method], how)
    result.unprivileged = tracer.unprivileged
    if tracer.unprivileged:  # what was really used, and how
        result.method, result.port = tracer.method, tracer.port
        if tracer.method == "tcp":  # the kernel's SYN: as long as ours, data aside
            result.packet_size = ip_len + HEADER["tcp"]
        result.notes.append(tracer.unpriv.how)
        result.fallback = tracer.unpriv.fallback
    if on_start is not None:
        on_start(result)
    return (
        result,
        tracer,
        tracer.steps(result, queries, first_ttl, max_ttl, (wait, here, near), parallel, on_hop, names),
    )


class _How:
    """How probes leave: TOS, path MTU discovery mode, source address, interface."""

    def __init__(self, tos: int, pmtudisc: str, source: str | None, interface: str | None) -> None:
        self.tos, self.pmtudisc, self.source, self.interface = tos, pmtudisc, source, interface

    def apply(self, sock: socket.socket, family: int) -> None:
        if self.tos:
            rawio.set_tos(sock, family, self.tos)
        rawio.set_pmtudisc(sock, family, self.pmtudisc)
        if self.interface is not None:
            rawio.bind_to(sock, family, self.interface)
        if self.source is not None:
            rawio.bind_to(sock, family, self.source)


class _Tracer:
    def __init__(
        self, family: int, address: str, method: str, port: int | None, payload: int, how: _How
    ) -> None:
        self.family, self.address, self.method, self.port = family, address, method, port
        self.payload, self.how, self.tos = payload, how, how.tos
        pid = os.getpid()
        self.ident = pid & 0xFFFF
        self.sport = 0x8000 | (pid & 0x7FFF) if method != "icmp" else 0
        self.seq_base = (pid * 2654435761) & 0xFFFF0000
        self.flow = (pid * 40503) & 0xFFFFF or 1
        self.matcher = TraceMatcher(
            family, address, method, self.sport, port or 0, self.ident, self.seq_base, how.tos
        )
        self.matcher.syn_data = payload if method == "tcp" else 0
        self.engine = Engine(family, self._match)
        self.names: dict[str, str | None] = {}
        self.dest = sockaddr(family, address, 0)
        self.ip_len = IP_HEADER[family]
        self.ttl = 0  # the TTL the sending socket is set to
        # Probe numbering (see `steps`) and the highest TTL a router answered for.
        self.first_ttl, self.queries, self.router_ttl = 1, 3, 0
        # Checked first, with the source or interface asked for: no route is one line.
        self.source = source_address(family, address, how.source or how.interface)
        icmp_proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        raw_kind = Kind.IP if family == socket.AF_INET else Kind.TRANSPORT6
        try:
            # One raw socket of the probes' protocol sends them and reads what comes
            # back in that protocol (TCP answers, UDP answers from a service, ICMP echo
            # replies); we build the transport, the kernel the IP header, so it
            # fragments as traceroute's probes are (or refuses, with -F).
            proto = {"udp": socket.IPPROTO_UDP, "tcp": socket.IPPROTO_TCP}.get(method, icmp_proto)
            self.sock = self.engine.listen(rawio.raw_receiver(family, proto), raw_kind, proto)
            if method != "icmp":
                self.engine.listen(rawio.raw_receiver(family, icmp_proto), raw_kind, icmp_proto)
            how.apply(self.sock, family)
            self.unprivileged = False
        except PermissionNeeded:
            self.engine.close()
            # Sockets any user may open, errors from their error queues (unpriv.py).
            from sockscope.probe.unpriv import Unprivileged

            self.unpriv = Unprivileged(self)
            self.method, self.port = self.unpriv.method, self.unpriv.port
            self.unprivileged = True

    def _match(self, got: Received) -> Hashable | None:
        key = self.matcher(got)
        if key is UDP_ANSWER:
            # A service's answer quotes nothing. Answers come in the order the probes
            # that reached it were sent, and those are beyond every hop a router
            # answered for: the answer is the earliest such probe's still waiting.
            beyond = self.router_ttl
            waiting = [k for k in self.engine.pending if isinstance(k, int) and self._ttl(k) > beyond]
            return min(waiting) if waiting else None
        if isinstance(key, int) and key in self.engine.pending and not self.matcher.reached(got):
            self.router_ttl = max(self.router_ttl, self._ttl(key))
        return key

    def _ttl(self, key: int) -> int:
        return self.first_ttl + (key - 1) // self.queries

    def send(self, probe: Probe, key: int, ttl: int) -> None:
        try:
            if self.unprivileged:
                self.unpriv.send(probe, key, ttl)
                return
            ip = flows.ip_header(self.family, self.source, self.address, ttl, key, self.tos, self.flow)
            if self.method == "udp":
                wire = flows.udp_probe(ip, self.sport, self.port or 0, key, self.payload)
            elif self.method == "icmp":
                wire = flows.icmp_probe(ip, self.ident, key, self.matcher.icmp_checksum, self.payload)
            else:
                wire = flows.tcp_syn(ip, self.sport, self.port or 0, self.seq_base + key, self.payload)
            if ttl != self.ttl:
                rawio.set_ttl(self.sock, self.family, ttl)
                self.ttl = ttl
            # The transport only (its checksum made with our source address): the kernel
            # adds the IP header.
            self.engine.send(self.sock, probe, wire[self.ip_len :], self.dest)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            self._too_long(probe, wire[self.ip_len :] if not self.unprivileged else b"")

    def _too_long(self, probe: Probe, data: bytes) -> None:
        """The kernel refused the probe as larger than the MTU (with -F): the probe's
        answer is that refusal, marked !F-MTU as traceroute marks it."""
        sock = self.unpriv.sock if self.unprivileged else self.sock
        mtu = rawio.too_long_mtu(sock, self.family, data, self.dest) if data else None
        mtu = mtu or rawio.route_mtu(self.family, self.address) or 0
        origin = rawio.SO_EE_ORIGIN_LOCAL
        queued = rawio.QueuedError(errno.EMSGSIZE, origin, 0, 0, mtu, None, (self.address, 0), b"")
        probe.sent = time.monotonic()
        self.engine.answer(probe, Received("", probe.sent, queued=queued))

    def steps(
        self,
        result: TraceRun,
        queries: int,
        first: int,
        last: int,
        waits: tuple[float, float, float],
        parallel: int,
        on_hop: Callable[[TraceHop], None] | None,
        names: bool,
    ) -> Steps:
        wait, here, near = waits
        self.first_ttl, self.queries, self.router_ttl = first, queries, 0
        start = time.monotonic()
        probes = [
            Probe(n + 1, (ttl, q))
            for n, (ttl, q) in enumerate((t, q) for t in range(first, last + 1) for q in range(queries))
        ]
        done = [False] * len(probes)
        end = len(probes)  # probes past the hop that reached the destination are not needed
        printed = 0
        inflight: set[int] = set()

        def timeout_of(i: int) -> float:
            # Linux traceroute's get_timeout(): an answer from the same hop, else from
            # any later hop, bounds how long a silent probe is worth waiting for.
            hop_start = i - i % queries
            if here > 0:
                for j in range(hop_start, hop_start + queries):
                    rtt = probes[j].rtt_ms
                    if j != i and rtt is not None:
                        return min(wait, (rtt / 1000 + WAIT_PRECISION) * here)
            if near > 0:
                for j in range(i + 1, len(probes)):
                    rtt = probes[j].rtt_ms
                    if rtt is not None:
                        return min(wait, (rtt / 1000 + WAIT_PRECISION) * near)
            return wait

        next_unsent = 0
        try:
            while printed < end:
                while next_unsent < end and len(inflight) < parallel:
                    probe = probes[next_unsent]
                    self.send(probe, probe.key, probe.info[0])  # type: ignore[arg-type]
                    inflight.add(next_unsent)
                    next_unsent += 1
                    self.engine.read_ready()  # replies to the first probes of a burst: see there
                deadline = min((probes[i].sent + timeout_of(i) for i in inflight), default=time.monotonic())
                answered = yield deadline
                for probe in answered:
                    assert isinstance(probe.key, int) and probe.reply is not None
                    i = probe.key - 1
                    inflight.discard(i)
                    done[i] = True
                    if self.matcher.is_final(probe.reply):
                        end = min(end, (i // queries + 1) * queries)
                now = time.monotonic()
                for i in [i for i in inflight if probes[i].sent + timeout_of(i) <= now or i >= end]:
                    inflight.discard(i)
                    self.engine.forget(probes[i])
                    done[i] = True
                while printed < end and all(done[printed : printed + queries]):
                    hop = self._hop(probes[printed : printed + queries], names)
                    result.hops.append(hop)
                    if on_hop is not None:
                        on_hop(hop)
                    printed += queries
        finally:
            for i in inflight:
                self.engine.forget(probes[i])
            result.elapsed_ms = (time.monotonic() - start) * 1000.0
        result.reached = any(self.matcher.reached(p.reply) for p in probes[:end] if p.reply is not None)

    def _name(self, address: str) -> str | None:
        """Reverse lookups, once per address (a hop answers up to three times)."""
        if address not in self.names:
            self.names[address] = reverse_name(address)
        return self.names[address]

    def _hop(self, probes: list[Probe], names: bool) -> TraceHop:
        out = []
        for probe in probes:
            ttl = probe.info[0]
            if probe.reply is None:
                out.append(TraceProbe(ttl))
                continue
            icmp_type, icmp_code, mark, notes = describe(self.matcher, probe.reply)
            source = probe.reply.source or None  # None: our own kernel's refusal (too long)
            name = self._name(source) if names and source else None
            out.append(
                TraceProbe(ttl, source, probe.rtt_ms, icmp_type, icmp_code, mark, name, tuple(notes))
            )
        return TraceHop(probes[0].info[0], out)
