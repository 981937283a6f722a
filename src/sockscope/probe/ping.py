"""ICMP echo (ping) over a raw socket, or an unprivileged ICMP datagram socket
when raw sockets are not allowed.

    result = sockscope.ping("::1", count=3)                # sync
    result = await sockscope.probe.aping("::1", count=3)   # in an asyncio program
"""

from __future__ import annotations

# `socket`'s C core: the wrapper module's enums and selectors cost every trace
# milliseconds of start-up; the functions and constants are the same.
import _socket as socket
import errno
import os
import time

from sockscope.errors import PermissionNeeded, UsageError
from sockscope.packets import ICMP, ICMPv6
from sockscope.probe import rawio
from sockscope.probe.common import icmp_text, queued_seq, sockaddr, too_big_mtu
from sockscope.probe.engine import OWN, Engine, Kind, Probe, Received, adrive, drive
from sockscope.probe.model import PingResult
from sockscope.probe.records import PingError, PingReply
from sockscope.probe.resolve import check_positive, check_range, check_size, resolve, source_address

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from typing import Any

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
    deadline: float | None = None,
    size: int = 56,
    ttl: int = 64,
    tos: int = 0,
    pattern: bytes | None = None,
    interface: str | None = None,
    pmtudisc: str | None = None,
    family: int | None = None,
    on_reply: Callable[[PingEvent], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_send_error: Callable[[int, str], None] | None = None,
    on_send: Callable[[int], None] | None = None,
) -> PingResult:
    """Send ``count`` echo requests ``interval`` s apart and wait up to ``timeout``
    s for each reply; ``count=None`` pings until Ctrl-C (KeyboardInterrupt) and then
    returns what it has, as ping does. ``deadline``: stop after that many seconds
    whatever happened (iputils' -w; with ``count``, once that many replies came).
    ``size`` data bytes (larger than the path MTU is fragmented by the kernel, as for
    iputils), filled with ``pattern`` if given; ``ttl``, ``tos``; ``interface``: an
    interface name or an address of this host to send from (-I); ``pmtudisc``:
    "do", "want", "dont" or "probe" (-M; the kernel's default is "want"); ``family``:
    AF_INET or AF_INET6 for a name. ``on_start`` gets the address once the
    arguments are checked, ``on_reply`` each reply or ICMP error as it comes,
    ``on_send`` each sequence sent, ``on_send_error`` (sequence, reason) for a
    request the kernel refused to send.
    Bad arguments raise `UsageError`; no route to the destination `NoRoute`."""
    result, pinger, steps = _start(_Options(locals()))
    try:
        drive(pinger.engine, steps)
    except KeyboardInterrupt:
        if count is not None and deadline is None:
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
    deadline: float | None = None,
    size: int = 56,
    ttl: int = 64,
    tos: int = 0,
    pattern: bytes | None = None,
    interface: str | None = None,
    pmtudisc: str | None = None,
    family: int | None = None,
    on_reply: Callable[[PingEvent], None] | None = None,
    on_start: Callable[[str], None] | None = None,
    on_send_error: Callable[[int, str], None] | None = None,
    on_send: Callable[[int], None] | None = None,
) -> PingResult:
    """The asyncio form of `ping`; with ``count=None`` it runs until the task is
    cancelled and then returns what it has."""
    import asyncio

    result, pinger, steps = _start(_Options(locals()))
    try:
        await adrive(pinger.engine, steps)
    except asyncio.CancelledError:
        if count is not None and deadline is None:
            raise
    finally:
        _finish(result, pinger, steps)
    return result


class _Options:
    """The arguments of `ping` / `aping`, checked."""

    def __init__(self, given: dict[str, Any]) -> None:
        self.host: str = given["host"]
        self.count: int | None = given["count"]
        if self.count is not None:
            check_range("count", self.count, 1, 2**31 - 1)
        self.interval = check_positive("interval", given["interval"])
        self.timeout = check_positive("timeout", given["timeout"])
        self.deadline: float | None = given["deadline"]
        if self.deadline is not None:
            check_positive("deadline", self.deadline)
        self.size: int = given["size"]
        self.ttl = check_range("TTL", given["ttl"], 1, 255)
        self.tos = check_range("TOS", given["tos"], 0, 255)
        pattern = given["pattern"]
        if pattern is not None and (not isinstance(pattern, bytes) or not 1 <= len(pattern) <= 16):
            raise UsageError(f"pattern must be 1 to 16 bytes, not {pattern!r}")
        self.pattern: bytes | None = pattern
        self.interface: str | None = given["interface"]
        if self.interface is not None and (not isinstance(self.interface, str) or not self.interface):
            raise UsageError(f"interface must be a name or an address, not {self.interface!r}")
        self.pmtudisc: str | None = given["pmtudisc"]
        if self.pmtudisc is not None and self.pmtudisc not in rawio.PMTUDISC:
            raise UsageError(f"bad path MTU discovery mode {self.pmtudisc!r} (use do, want, dont or probe)")
        self.family: int | None = given["family"]
        self.on_reply: Callable[[PingEvent], None] | None = given["on_reply"]
        self.on_start: Callable[[str], None] | None = given["on_start"]
        self.on_send_error: Callable[[int, str], None] | None = given["on_send_error"]
        self.on_send: Callable[[int], None] | None = given["on_send"]

    def payload(self) -> bytes:
        if self.pattern is None:
            return bytes((0x10 + i) & 0xFF for i in range(self.size))
        return (self.pattern * (self.size // len(self.pattern) + 1))[: self.size]


def _start(o: _Options) -> tuple[PingResult, _Pinger, Steps]:
    fam, address = resolve(o.host, o.family)
    check_size(fam, o.size)
    result = PingResult(o.host, address, o.size)
    pinger = _Pinger(fam, address, o)
    if o.on_start is not None:
        o.on_start(address)
    return result, pinger, pinger.steps(result, o)


def _finish(result: PingResult, pinger: _Pinger, steps: Steps) -> None:
    steps.close()  # runs the prober's own clean-up (elapsed time) if it was cut short
    result.ignored, result.malformed = pinger.engine.ignored, pinger.engine.malformed
    pinger.engine.close()


class _Pinger:
    def __init__(self, family: int, address: str, o: _Options) -> None:
        self.family, self.address = family, address
        self.payload = o.payload()
        self.engine = Engine(family, self._match)
        # Requests answered, by sequence: a further echo reply to one is a duplicate.
        self.replied: dict[int, Probe] = {}
        self.duplicates = 0
        self.dest = sockaddr(family, address)
        # Checked first: no route (or a source that is not ours) is one line and exit 2.
        source_address(family, address, o.interface)
        proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
        try:
            # A raw ICMP socket, as iputils uses: we build the ICMP message, the kernel
            # the IP header, so it fragments, does path MTU discovery (-M) and sets TTL/TOS.
            self.sock = self.engine.listen(
                rawio.raw_receiver(family, proto),
                Kind.IP if family == socket.AF_INET else Kind.TRANSPORT6,
                proto,
            )
            self.ident = os.getpid() & 0xFFFF
            self.unprivileged = False
        except PermissionNeeded:
            self.engine.close()
            # The kernel owns the identifier of an ICMP datagram socket: its port.
            self.sock = self.engine.listen(rawio.icmp_datagram(family), Kind.DATAGRAM, proto)
            self.unprivileged = True
        rawio.set_ttl(self.sock, family, o.ttl)
        if o.tos:
            rawio.set_tos(self.sock, family, o.tos)
        if o.pmtudisc is not None:
            rawio.set_pmtudisc(self.sock, family, o.pmtudisc)
        if o.interface is not None:
            rawio.bind_to(self.sock, family, o.interface)
        if self.unprivileged:
            self.sock.connect(self.dest)
            self.ident = self.sock.getsockname()[1]

    def request(self, seq: int) -> bytes:
        """The ICMP message; the kernel adds the IP header (and, for ICMPv6 and
        datagram sockets, the checksum, which needs the source it picks)."""
        if self.family == socket.AF_INET:
            return ICMP.build(type=ECHO_REQUEST[self.family], ident=self.ident, seq=seq & 0xFFFF).pack(
                self.payload
            )
        icmp = ICMPv6.build(type=ECHO_REQUEST[self.family], ident=self.ident, seq=seq & 0xFFFF, checksum=0)
        return icmp.pack_header() + self.payload

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

    def steps(self, result: PingResult, o: _Options) -> Steps:
        engine = self.engine
        result.unprivileged = self.unprivileged
        start = next_send = time.monotonic()
        stop = None if o.deadline is None else start + o.deadline
        seq = 0
        inflight: list[Probe] = []

        def more() -> bool:
            """Send another request? iputils' rules: with a deadline, until it passes,
            COUNT requests are answered (replies and errors) or an error comes."""
            errors = len(result.errors) + len(result.send_errors)
            if stop is not None:
                if time.monotonic() >= stop or errors:
                    return False
                return o.count is None or result.received + errors < o.count
            return o.count is None or seq < o.count

        try:
            while True:
                now = time.monotonic()
                if more() and now >= next_send:
                    seq += 1
                    probe = Probe(seq & 0xFFFF, seq)
                    self._wrapped(seq & 0xFFFF)
                    result.sent += 1
                    try:
                        engine.send(self.sock, probe, self.request(seq), self.dest)
                    except OSError as exc:  # iputils prints it and carries on
                        self._refused(result, o, seq, exc)
                    else:
                        inflight.append(probe)
                        if o.on_send is not None:
                            o.on_send(seq)
                    next_send += o.interval
                going = more()
                if not going and not inflight:
                    return
                waits = [p.sent + o.timeout for p in inflight] + ([next_send] if going else [])
                if stop is not None:
                    waits.append(stop)
                answered = yield min(waits)
                for probe in answered:
                    self._answered(probe, result, inflight, o)
                now = time.monotonic()
                for probe in [p for p in inflight if p.sent + o.timeout <= now]:
                    inflight.remove(probe)
                    engine.forget(probe)
                if stop is not None and (now >= stop or not more()):
                    return  # a deadline run ends at once, what is in flight unanswered
                if not more() and not inflight:
                    return
        finally:
            for probe in inflight:
                engine.forget(probe)
            result.elapsed_ms = (time.monotonic() - start) * 1000.0

    def _answered(self, probe: Probe, result: PingResult, inflight: list[Probe], o: _Options) -> None:
        event = self._event(probe)
        if isinstance(probe.key, tuple):  # (DUP, seq, n): one more for the same request
            assert isinstance(event, PingReply)
            event = event._replace(duplicate=True)
            result.duplicates += 1
            result.duplicate_rtts.append(event.rtt_ms)
        else:
            if probe in inflight:
                inflight.remove(probe)
            if isinstance(event, PingReply):
                result.replies.append(event)
            else:
                result.errors.append(event)
        if o.on_reply is not None:
            o.on_reply(event)

    def _refused(self, result: PingResult, o: _Options, seq: int, exc: OSError) -> None:
        """A request the kernel would not send: iputils' "local error" lines."""
        if exc.errno == errno.EMSGSIZE:
            mtu = rawio.too_long_mtu(self.sock, self.family, self.request(seq), self.dest)
            text = "local error: message too long" + (f", mtu={mtu}" if mtu else "")
        else:
            text = f"sendmsg: {exc.strerror or exc}"
        result.send_errors.append((seq, text))
        if o.on_send_error is not None:
            o.on_send_error(seq, text)

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
            mtu = too_big_mtu(self.family, q.icmp_type, q.icmp_code, q.info)
            text = icmp_text(self.family, q.icmp_type, q.icmp_code, mtu)
            return PingError(probe.info, got.source, q.icmp_type, q.icmp_code, text)
        icmp = got.icmp
        assert icmp is not None
        if icmp.type != ECHO_REPLY[self.family]:
            mtu = too_big_mtu(self.family, icmp.type, icmp.code, icmp.ident << 16 | icmp.seq)
            text = icmp_text(self.family, icmp.type, icmp.code, mtu)
            return PingError(probe.info, got.source, icmp.type, icmp.code, text)
        return PingReply(probe.info, got.ttl, probe.rtt_ms, got.source, 8 + len(icmp.payload))
