"""ICMP echo (ping) over a raw socket, or an unprivileged ICMP datagram socket
when raw sockets are not allowed.

    result = sockscope.ping("::1", count=3)                # sync
    result = await sockscope.probe.aping("::1", count=3)   # in an asyncio program
"""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import os
import time

from sockscope.errors import PermissionNeeded
from sockscope.packets import ICMP, ICMPv6, IPv4, IPv6, stack
from sockscope.probe import rawio
from sockscope.probe.common import icmp_text, sockaddr
from sockscope.probe.engine import OWN, Engine, Kind, Probe, Received, adrive, drive
from sockscope.probe.model import PingError, PingReply, PingResult
from sockscope.probe.resolve import check_positive, check_range, check_size, resolve, source_address

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable

    from sockscope.probe.engine import Steps

ECHO_REQUEST: dict[int, int] = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY: dict[int, int] = {socket.AF_INET: 0, socket.AF_INET6: 129}

PingEvent = PingReply | PingError
DUP = "dup"  # the key of a further reply to an answered request is (DUP, seq)


def ping(
    host: str,
    *,
    count: int | None = 4,
    interval: float = 1.0,
    timeout: float = 10.0,
    size: int = 56,
    ttl: int = 64,
    family: int | None = None,
    on_reply: Callable[[PingEvent], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> PingResult:
    """Send ``count`` echo requests ``interval`` s apart; wait up to ``timeout`` s
    for each reply. ``count=None`` pings until Ctrl-C (KeyboardInterrupt) and then
    returns what it has, as ping does. ``on_start`` gets the address once the
    arguments are checked, ``on_reply`` each reply or error as it comes."""
    result, pinger, steps = _start(host, count, interval, timeout, size, ttl, family, on_reply, on_start)
    try:
        drive(pinger.engine, steps)
    except KeyboardInterrupt:
        if count is not None:
            raise
    finally:
        _finish(result, pinger, steps)
    return result


async def aping(
    host: str,
    *,
    count: int | None = 4,
    interval: float = 1.0,
    timeout: float = 10.0,
    size: int = 56,
    ttl: int = 64,
    family: int | None = None,
    on_reply: Callable[[PingEvent], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> PingResult:
    """The asyncio form of `ping`; with ``count=None`` it runs until the task is
    cancelled and then returns what it has."""
    import asyncio

    result, pinger, steps = _start(host, count, interval, timeout, size, ttl, family, on_reply, on_start)
    try:
        await adrive(pinger.engine, steps)
    except asyncio.CancelledError:
        if count is not None:
            raise
    finally:
        _finish(result, pinger, steps)
    return result


def _start(
    host: str,
    count: int | None,
    interval: float,
    timeout: float,
    size: int,
    ttl: int,
    family: int | None,
    on_reply: Callable[[PingEvent], None] | None,
    on_start: Callable[[str], None] | None,
) -> tuple[PingResult, _Pinger, Steps]:
    if count is not None:
        check_range("count", count, 1, 1 << 31)
    check_positive("interval", interval)
    check_positive("timeout", timeout)
    check_range("TTL", ttl, 1, 255)
    fam, address = resolve(host, family)
    check_size(fam, address, size)
    result = PingResult(host, address, size)
    pinger = _Pinger(fam, address, size, ttl)
    if on_start is not None:
        on_start(address)
    return result, pinger, pinger.steps(result, count, interval, timeout, on_reply)


def _finish(result: PingResult, pinger: _Pinger, steps: Steps) -> None:
    steps.close()  # runs the prober's own clean-up (elapsed time) if it was cut short
    result.ignored, result.malformed = pinger.engine.ignored, pinger.engine.malformed
    pinger.engine.close()


def queued_seq(q: rawio.QueuedError) -> int | None:
    """The sequence of the echo request an ICMP datagram socket's error-queue entry
    quotes (None for a local error or a quote too short)."""
    if len(q.payload) < 8 or q.origin == rawio.SO_EE_ORIGIN_LOCAL:
        return None
    return int.from_bytes(q.payload[6:8], "big")


class _Pinger:
    def __init__(self, family: int, address: str, size: int, ttl: int) -> None:
        self.family, self.address, self.ttl = family, address, ttl
        self.payload = bytes((0x10 + i) & 0xFF for i in range(size))
        self.engine = Engine(family, self._match)
        # Requests answered, by sequence: a further echo reply to one is a duplicate.
        self.replied: dict[int, Probe] = {}
        self.duplicates = 0
        self.dest = sockaddr(family, address)
        try:
            self.sock = self.engine.own(rawio.raw_sender(family))
            proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
            self.engine.listen(
                rawio.raw_receiver(family, proto),
                Kind.IP if family == socket.AF_INET else Kind.TRANSPORT6,
                proto,
            )
            self.ident = os.getpid() & 0xFFFF
            self.source: str | None = source_address(family, address)
            self.unprivileged = False
        except PermissionNeeded:
            self.engine.close()
            # The kernel owns the identifier of an ICMP datagram socket: its port.
            self.sock = self.engine.listen(
                rawio.icmp_datagram(family),
                Kind.DATAGRAM,
                socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6,
            )
            rawio.set_ttl(self.sock, family, ttl)
            self.sock.connect(self.dest)
            self.ident = self.sock.getsockname()[1]
            self.source = None
            self.unprivileged = True

    def request(self, seq: int) -> bytes:
        icmp = (ICMP if self.family == socket.AF_INET else ICMPv6).build(
            type=ECHO_REQUEST[self.family], ident=self.ident, seq=seq & 0xFFFF
        )
        if self.source is None:  # datagram socket: the kernel adds the IP header and checksum
            return icmp.pack_header() + self.payload
        ip = (
            IPv4.build(src=self.source, dst=self.address, ttl=self.ttl, ident=seq & 0xFFFF)
            if self.family == socket.AF_INET
            else IPv6.build(src=self.source, dst=self.address, hop_limit=self.ttl)
        )
        return stack(ip, icmp, payload=self.payload)

    def _match(self, got: Received) -> Hashable | None:
        if got.queued is not None:  # datagram socket's error queue: our own request comes back
            got.source = got.queued.offender or got.source
            return queued_seq(got.queued)
        icmp = got.icmp
        if icmp is None:
            return None
        if icmp.type == ECHO_REPLY[self.family]:
            return self._echo_reply(icmp.seq) if icmp.ident == self.ident else None
        if icmp.type == ECHO_REQUEST[self.family]:
            return OWN if icmp.ident == self.ident and got.source == self.address else None
        quoted = icmp.quoted
        inner = quoted.next_layer if quoted is not None else None
        if (
            isinstance(inner, ICMP | ICMPv6)
            and inner.type == ECHO_REQUEST[self.family]
            and inner.ident == self.ident
            and getattr(quoted, "dst_ip", None) == self.address
        ):
            return inner.seq
        return None

    def steps(
        self,
        result: PingResult,
        count: int | None,
        interval: float,
        timeout: float,
        on_reply: Callable[[PingEvent], None] | None,
    ) -> Steps:
        engine = self.engine
        result.unprivileged = self.unprivileged
        start = next_send = time.monotonic()
        seq = 0
        inflight: list[Probe] = []
        try:
            while True:
                now = time.monotonic()
                more = count is None or seq < count
                if more and now >= next_send:
                    seq += 1
                    probe = Probe(seq & 0xFFFF, seq)
                    self._wrapped(seq & 0xFFFF)
                    engine.send(self.sock, probe, self.request(seq), self.dest)
                    result.sent += 1
                    inflight.append(probe)
                    next_send += interval
                    more = count is None or seq < count
                answered = yield min(
                    [p.sent + timeout for p in inflight] + ([next_send] if more else [now + timeout])
                )
                for probe in answered:
                    event = self._event(probe)
                    if isinstance(probe.key, tuple):  # (DUP, seq, n): one more for the same request
                        assert isinstance(event, PingReply)
                        event = event._replace(duplicate=True)
                        result.duplicates += 1
                        result.duplicate_rtts.append(event.rtt_ms)
                    elif isinstance(event, PingReply):
                        inflight.remove(probe)
                        result.replies.append(event)
                    else:
                        inflight.remove(probe)
                        result.errors.append(event)
                    if on_reply is not None:
                        on_reply(event)
                now = time.monotonic()
                for probe in [p for p in inflight if p.sent + timeout <= now]:
                    inflight.remove(probe)
                    engine.forget(probe)
                if not more and not inflight:
                    return
        finally:
            result.elapsed_ms = (time.monotonic() - start) * 1000.0

    def _echo_reply(self, seq: int) -> Hashable | None:
        """The key of an echo reply: its request's, or for a further reply to an
        answered request (iputils' DUP!) a probe of its own, expected here and now
        since several replies can be read before the prober sees the first."""
        first = self.engine.pending.get(seq)
        if first is not None:
            self.replied[seq] = first
            return seq
        answered = self.replied.get(seq)
        if answered is None:
            return None  # a reply after the wait, or to no request of ours
        self.duplicates += 1
        catcher = Probe((DUP, seq, self.duplicates), answered.info)
        catcher.sent = answered.sent
        self.engine.expect(catcher)
        return catcher.key

    def _wrapped(self, seq: int) -> None:
        """A sequence number used again (after 65,535 requests) starts afresh."""
        self.replied.pop(seq, None)

    def _event(self, probe: Probe) -> PingEvent:
        got = probe.reply
        assert got is not None and probe.rtt_ms is not None
        if got.queued is not None:
            q = got.queued
            return PingError(
                probe.info,
                got.source,
                q.icmp_type,
                q.icmp_code,
                icmp_text(self.family, q.icmp_type, q.icmp_code),
            )
        icmp = got.icmp
        assert icmp is not None
        if icmp.type != ECHO_REPLY[self.family]:
            return PingError(
                probe.info, got.source, icmp.type, icmp.code, icmp_text(self.family, icmp.type, icmp.code)
            )
        return PingReply(probe.info, got.ttl, probe.rtt_ms, got.source, 8 + len(icmp.payload))
