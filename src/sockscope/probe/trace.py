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
import os
import time

from sockscope.errors import PermissionNeeded, UsageError
from sockscope.probe import flows, rawio
from sockscope.probe.common import sockaddr
from sockscope.probe.engine import Engine, Kind, Probe, adrive, drive
from sockscope.probe.matching import TraceMatcher, describe
from sockscope.probe.model import TraceHop, TraceProbe, TraceResult
from sockscope.probe.resolve import (
    IP_HEADER,
    check_positive,
    check_range,
    check_size,
    resolve,
    reverse_name,
    source_address,
)

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from sockscope.probe.engine import Steps

METHODS = ("udp", "icmp", "tcp")
DEFAULT_PORT = {"udp": 33434, "tcp": 80, "icmp": None}
HEADER = {"udp": flows.UDP_HEADER, "icmp": flows.ICMP_HEADER, "tcp": flows.TCP_HEADER}
WAIT_PRECISION = 0.001  # added to an RTT before scaling it, as traceroute does


def trace(host: str, **options: Any) -> TraceResult:
    """Trace the path to ``host``; the options are those of `prepare`."""
    result, tracer, steps = prepare(host, **options)
    try:
        drive(tracer.engine, steps)
    finally:
        _finish(result, tracer, steps)
    return result


async def atrace(host: str, **options: Any) -> TraceResult:
    """`trace` for asyncio programs: many traces can run at once, no threads."""
    result, tracer, steps = prepare(host, **options)
    try:
        await adrive(tracer.engine, steps)
    finally:
        _finish(result, tracer, steps)
    return result


def _finish(result: TraceResult, tracer: _Tracer, steps: Steps) -> None:
    steps.close()
    result.ignored, result.malformed = tracer.engine.ignored, tracer.engine.malformed
    tracer.engine.close()


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
    on_hop: Callable[[TraceHop], None] | None = None,
    on_start: Callable[[TraceResult], None] | None = None,
) -> tuple[TraceResult, _Tracer, Steps]:
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
    if here < 0 or near < 0:
        raise UsageError("wait factors must not be negative")
    dport = DEFAULT_PORT[method] if port is None else check_range("port", port, 1, 65535)
    fam, address = resolve(host, family)
    ip_len = IP_HEADER[fam]
    default_len = 60 if fam == socket.AF_INET else 80
    total = default_len if packet_len is None else packet_len
    if total < ip_len + HEADER[method] + 2:
        raise UsageError(f"packet length {total} too small (at least {ip_len + HEADER[method] + 2})")
    check_size(fam, address, total - ip_len - HEADER[method], HEADER[method])
    result = TraceResult(host, address, method, dport, total, max_ttl)
    tracer = _Tracer(fam, address, method, dport, total - ip_len - HEADER[method], tos)
    result.unprivileged = tracer.unprivileged
    if tracer.unprivileged:  # what was really used, and how
        result.method, result.port = tracer.method, tracer.port
        result.notes.append(tracer.unpriv.how)
        result.fallback = tracer.unpriv.fallback
    if on_start is not None:
        on_start(result)
    return (
        result,
        tracer,
        tracer.steps(result, queries, first_ttl, max_ttl, (wait, here, near), parallel, on_hop, names),
    )


class _Tracer:
    def __init__(
        self, family: int, address: str, method: str, port: int | None, payload: int, tos: int
    ) -> None:
        self.family, self.address, self.method, self.port, self.payload, self.tos = (
            family,
            address,
            method,
            port,
            payload,
            tos,
        )
        pid = os.getpid()
        self.ident = pid & 0xFFFF
        self.sport = 0x8000 | (pid & 0x7FFF) if method != "icmp" else 0
        self.seq_base = (pid * 2654435761) & 0xFFFF0000
        self.flow = (pid * 40503) & 0xFFFFF or 1
        self.matcher = TraceMatcher(
            family, address, method, self.sport, port or 0, self.ident, self.seq_base, tos
        )
        self.engine = Engine(family, self.matcher)
        self.names: dict[str, str | None] = {}
        self.dest = sockaddr(family, address, 0)
        icmp_proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        raw_kind = Kind.IP if family == socket.AF_INET else Kind.TRANSPORT6
        try:
            self.sock = self.engine.own(rawio.raw_sender(family))
            self.engine.listen(rawio.raw_receiver(family, icmp_proto), raw_kind, icmp_proto)
            if method == "tcp":
                self.engine.listen(
                    rawio.raw_receiver(family, socket.IPPROTO_TCP), raw_kind, socket.IPPROTO_TCP
                )
            self.source = source_address(family, address)
            self.unprivileged = False
        except PermissionNeeded:
            self.engine.close()
            # Sockets any user may open, errors from their error queues (unpriv.py).
            from sockscope.probe.unpriv import Unprivileged

            self.unpriv = Unprivileged(self)
            self.method, self.port = self.unpriv.method, self.unpriv.port
            self.source = ""
            self.unprivileged = True

    def send(self, probe: Probe, key: int, ttl: int) -> None:
        if self.unprivileged:
            self.unpriv.send(probe, key, ttl)
            return
        ip = flows.ip_header(self.family, self.source, self.address, ttl, key, self.tos, self.flow)
        if self.method == "udp":
            wire = flows.udp_probe(ip, self.sport, self.port or 0, key, self.payload)
        elif self.method == "icmp":
            wire = flows.icmp_probe(ip, self.ident, key, self.matcher.icmp_checksum, self.payload)
        else:
            wire = flows.tcp_syn(ip, self.sport, self.port or 0, self.seq_base + key)
        self.engine.send(self.sock, probe, wire, self.dest)

    def steps(
        self,
        result: TraceResult,
        queries: int,
        first: int,
        last: int,
        waits: tuple[float, float, float],
        parallel: int,
        on_hop: Callable[[TraceHop], None] | None,
        names: bool,
    ) -> Steps:
        wait, here, near = waits
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
            name = self._name(probe.reply.source) if names else None
            out.append(
                TraceProbe(
                    ttl, probe.reply.source, probe.rtt_ms, icmp_type, icmp_code, mark, name, tuple(notes)
                )
            )
        return TraceHop(probes[0].info[0], out)
