"""Port scans of one host: TCP connect (any user), TCP SYN half-open over raw
sockets (as nmap -sS; the kernel answers the SYN-ACK with a RST itself, since no
socket of ours owns the port), and UDP (ICMP port unreachable means closed).

Rate-limited (``rate`` probes per second, retransmissions included) and
unanswered probes are sent again ``retries`` times. For checking what your own
hosts expose.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections import deque

from sockscope.errors import UsageError
from sockscope.packets import ACK, ICMP, RST, SYN, TCP, ICMPv6
from sockscope.probe import flows, rawio
from sockscope.probe.common import is_port_unreachable, is_unreachable, sockaddr, unreach_reason
from sockscope.probe.engine import OWN, Engine, Kind, Probe, Received, adrive, drive
from sockscope.probe.matching import quoted_transport
from sockscope.probe.model import ScanResult
from sockscope.probe.ports import parse_ports
from sockscope.probe.records import PortResult
from sockscope.probe.resolve import check_number, check_positive, check_range, resolve, source_address

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Hashable, Iterable

    from sockscope.probe.engine import Steps

METHODS = ("connect", "syn", "udp")
MIN_WAIT = 0.1  # never give up on a probe sooner than this, whatever the RTTs seen
_CONNECT_REASONS = {
    errno.ECONNREFUSED: ("closed", "conn-refused"),
    errno.EHOSTUNREACH: ("filtered", "host-unreach"),
    errno.ENETUNREACH: ("filtered", "net-unreach"),
    errno.EACCES: ("filtered", "admin-prohibited"),
    errno.EPERM: ("filtered", "admin-prohibited"),
}


def scan(
    host: str,
    ports: str | Iterable[int] = "1-1024",
    *,
    method: str = "connect",
    rate: float = 1000.0,
    retries: int = 1,
    timeout: float = 1.0,
    max_inflight: int = 1024,
    family: int | None = None,
) -> ScanResult:
    """Scan ``ports`` of ``host``: a list of numbers or text as users write it
    (``"22,80,8000-8100"``, ``"-"`` for all). ``method``: "connect" (any user),
    "syn" (half-open, CAP_NET_RAW) or "udp". ``rate`` caps probes per second (0: no
    cap); a probe unanswered after ``timeout`` s (less once RTTs are known: the
    smoothed RTT plus 4 deviations, at least 0.1 s) is sent again up to ``retries``
    times; at most ``max_inflight`` wait at once. ``family``: AF_INET or AF_INET6 to
    pick one for a name. Bad arguments raise `UsageError`."""
    result, scanner, port_list = prepare(
        host, ports, method, rate, retries, timeout, max_inflight, family
    )
    if scanner.method == "connect":  # the kernel's connect(): only asyncio runs many at once
        import asyncio

        return asyncio.run(_connect_scan(result, scanner, port_list))
    engine = Engine(scanner.family, scanner.match, timestamps=False)
    steps = scanner.steps(engine, port_list, result)
    try:
        scanner.open(engine)
        drive(engine, steps)
    finally:
        _finish(result, scanner, engine, steps, port_list)
    return result


async def ascan(
    host: str,
    ports: str | Iterable[int] = "1-1024",
    *,
    method: str = "connect",
    rate: float = 1000.0,
    retries: int = 1,
    timeout: float = 1.0,
    max_inflight: int = 1024,
    family: int | None = None,
) -> ScanResult:
    """`scan` for asyncio programs."""
    result, scanner, port_list = prepare(
        host, ports, method, rate, retries, timeout, max_inflight, family
    )
    if scanner.method == "connect":
        return await _connect_scan(result, scanner, port_list)
    engine = Engine(scanner.family, scanner.match, timestamps=False)
    steps = scanner.steps(engine, port_list, result)
    try:
        scanner.open(engine)
        await adrive(engine, steps)
    finally:
        _finish(result, scanner, engine, steps, port_list)
    return result


async def _connect_scan(result: ScanResult, scanner: _Scanner, port_list: list[int]) -> ScanResult:
    found = await scanner.connect_all(port_list, result)
    result.elapsed_ms = (time.monotonic() - scanner.start) * 1000.0
    result.ports = [found[p] for p in port_list]
    return result


def _finish(
    result: ScanResult, scanner: _Scanner, engine: Engine, steps: Steps, port_list: list[int]
) -> None:
    steps.close()
    result.ignored, result.malformed = engine.ignored, engine.malformed
    engine.close()
    result.elapsed_ms = (time.monotonic() - scanner.start) * 1000.0
    if len(scanner.found) == len(port_list):
        result.ports = [scanner.found[p] for p in port_list]


def prepare(
    host: str,
    ports: str | Iterable[int],
    method: str,
    rate: float,
    retries: int,
    timeout: float,
    max_inflight: int,
    family: int | None,
) -> tuple[ScanResult, _Scanner, list[int]]:
    """Check the arguments of `scan` (usage errors) and resolve the host."""
    if method not in METHODS:
        raise UsageError(f"unknown scan method {method!r} (use {', '.join(METHODS)})")
    port_list = parse_ports(ports) if isinstance(ports, str) else _port_numbers(ports)
    if not port_list:
        raise UsageError("no ports to scan")
    if check_number("rate", rate) < 0:
        raise UsageError(f"rate must not be negative, got {rate}")
    check_range("retries", retries, 0, 20)
    check_positive("timeout", timeout)
    check_range("probes in flight", max_inflight, 1, 65535)
    fam, address = resolve(host, family)
    return (
        ScanResult(host, address, method),
        _Scanner(fam, address, method, rate, retries, timeout, max_inflight),
        port_list,
    )


def _port_numbers(ports: object) -> list[int]:
    """A list of port numbers given as such: sorted, without repeats."""
    try:
        given = list(ports)  # type: ignore[call-overload]
    except TypeError:
        raise UsageError(f"ports must be text or port numbers, not {type(ports).__name__}") from None
    return sorted({check_range("port", port, 1, 65535) for port in given})


class _Scanner:
    def __init__(
        self,
        family: int,
        address: str,
        method: str,
        rate: float,
        retries: int,
        timeout: float,
        max_inflight: int,
    ) -> None:
        self.family, self.address, self.method = family, address, method
        self.rate, self.retries, self.timeout, self.max_inflight = rate, retries, timeout, max_inflight
        self.proto = "udp" if method == "udp" else "tcp"
        self.sport = 0x8000 | (os.getpid() & 0x3FFF) | 0x4000
        self.seq_base = (os.getpid() * 2654435761 + 0x5EED) & 0xFFFFFFFF
        self.srtt: float | None = None  # smoothed RTT and its variation (RFC 6298), as nmap keeps
        self.rttvar = 0.0
        self.found: dict[int, PortResult] = {}
        self.start = time.monotonic()

    # -- pacing ---------------------------------------------------------------------

    def _wait(self) -> float:
        """How long an unanswered probe is worth waiting for, from the RTTs seen."""
        if self.srtt is None:
            return self.timeout
        return min(self.timeout, max(MIN_WAIT, self.srtt + 4 * self.rttvar))

    def _measured(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    # -- SYN and UDP probes over the engine --------------------------------------------

    def open(self, engine: Engine) -> None:
        kind = Kind.IP if self.family == socket.AF_INET else Kind.TRANSPORT6
        icmp = socket.IPPROTO_ICMP if self.family == socket.AF_INET else socket.IPPROTO_ICMPV6
        if self.method == "syn":
            self.sock = engine.own(rawio.raw_sender(self.family))
            engine.listen(rawio.raw_receiver(self.family, socket.IPPROTO_TCP), kind, socket.IPPROTO_TCP)
            engine.listen(rawio.raw_receiver(self.family, icmp), kind, icmp)
            source = source_address(self.family, self.address)
            ip = flows.ip_header(self.family, source, self.address, 64, 0, 0, 0)
            self.syn = flows.SynTemplate(ip, self.sport)
            self.dest = sockaddr(self.family, self.address)
        else:
            self.sock = engine.listen(rawio.udp_with_errors(self.family), Kind.DATAGRAM, socket.IPPROTO_UDP)

    def _send(self, engine: Engine, probe: Probe) -> None:
        port: int = probe.info
        if self.method == "udp":
            engine.send(self.sock, probe, b"", sockaddr(self.family, self.address, port))
            return
        wire = self.syn.packet(port, (self.seq_base + port) & 0xFFFFFFFF)
        engine.send(self.sock, probe, wire, self.dest)

    def steps(self, engine: Engine, ports: list[int], result: ScanResult) -> Steps:
        found = self.found
        fresh = deque(ports)
        again: deque[Probe] = deque()  # unanswered, due to be sent again
        # In send order, so the first entry is always the next to time out (all wait alike).
        inflight: dict[int, Probe] = {}
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        next_slot = time.monotonic()
        while fresh or again or inflight:
            now = time.monotonic()
            while (
                (fresh or again) and len(inflight) < self.max_inflight and (interval == 0 or next_slot <= now)
            ):
                probe = again.popleft() if again else Probe(fresh[0], fresh.popleft())
                self._send(engine, probe)
                result.probes_sent += 1
                inflight[probe.info] = probe
                next_slot = max(next_slot + interval, now - 0.05) if interval else now
            wait = self._wait()
            oldest = next(iter(inflight.values()), None)
            deadline = now + wait if oldest is None else oldest.sent + wait
            if (fresh or again) and len(inflight) < self.max_inflight:
                deadline = min(deadline, next_slot)
            answered = yield deadline
            for probe in answered:
                inflight.pop(probe.info, None)
                assert probe.reply is not None
                self._measured(probe.reply.time - probe.sent)
                found[probe.info] = self._verdict(probe.info, probe.reply)
            now = time.monotonic()
            wait = self._wait()
            while inflight:
                port, probe = next(iter(inflight.items()))
                if probe.sent + wait > now:
                    break
                del inflight[port]
                engine.forget(probe)
                if probe.tries <= self.retries:
                    again.append(probe)
                else:
                    state = "open|filtered" if self.method == "udp" else "filtered"
                    found[port] = PortResult(port, self.proto, state, "no-response")

    def match(self, got: Received) -> Hashable | None:
        if got.queued is not None:  # UDP socket error queue
            q = got.queued
            if q.origin == rawio.SO_EE_ORIGIN_LOCAL or q.destination[0].split("%")[0] != self.address:
                return None
            return q.destination[1]
        if self.method == "udp":
            return got.port if got.source.split("%")[0] == self.address and got.packet is None else None
        tcp = got.transport
        if isinstance(tcp, ICMP | ICMPv6):
            found = quoted_transport(tcp) if tcp.is_error else None
            if found is None or found[0].dst_ip != self.address or len(found[2]) < 4:
                return None
            sport, dport = int.from_bytes(found[2][:2], "big"), int.from_bytes(found[2][2:4], "big")
            return dport if sport == self.sport else None
        if not isinstance(tcp, TCP):
            return None
        if tcp.sport == self.sport and tcp.flags == SYN:
            return OWN  # our own SYN read back (scanning a local address)
        if tcp.dport != self.sport or got.source != self.address:
            return None
        if tcp.ack != (self.seq_base + tcp.sport + 1) & 0xFFFFFFFF:
            return None
        return tcp.sport

    def _verdict(self, port: int, got: Received) -> PortResult:
        if got.queued is not None:
            q = got.queued
            if is_port_unreachable(self.family, q.icmp_type, q.icmp_code):
                return PortResult(port, "udp", "closed", "port-unreach", q.offender)
            return PortResult(port, "udp", "filtered", _icmp_reason(self.family, q), q.offender)
        if self.method == "udp":
            return PortResult(port, "udp", "open", "udp-response")
        tcp = got.transport
        if isinstance(tcp, ICMP | ICMPv6):
            return PortResult(port, "tcp", "filtered", _icmp_reason(self.family, tcp), got.source)
        assert isinstance(tcp, TCP)
        if tcp.flags & RST:
            return PortResult(port, "tcp", "closed", "reset")
        if tcp.flags & (SYN | ACK) == SYN | ACK:
            return PortResult(port, "tcp", "open", "syn-ack")
        return PortResult(port, "tcp", "filtered", f"tcp-flags-{tcp.flag_string}")

    # -- connect scan: the kernel does the handshake --------------------------------------

    async def connect_all(self, ports: list[int], result: ScanResult) -> dict[int, PortResult]:
        import asyncio

        found: dict[int, PortResult] = {}
        limit = asyncio.Semaphore(self.max_inflight)
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        start = time.monotonic()
        loop = asyncio.get_running_loop()

        async def one(index: int, port: int) -> None:
            async with limit:
                for attempt in range(self.retries + 1):
                    # Pace the starts: attempt k of the probe at index i goes after them all.
                    slot = start + interval * (index + attempt * len(ports))
                    delay = slot - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    result.probes_sent += 1
                    verdict = await self._connect(loop, port)
                    if verdict is not None:
                        found[port] = verdict
                        return
                found[port] = PortResult(port, "tcp", "filtered", "no-response")

        await asyncio.gather(*(one(i, p) for i, p in enumerate(ports)))
        return found

    async def _connect(self, loop: asyncio.AbstractEventLoop, port: int) -> PortResult | None:
        import asyncio

        sock = socket.socket(self.family, socket.SOCK_STREAM)
        # An ICMP error's type and code, not just the errno it maps to: IPv4's
        # admin-prohibited (code 13) fails connect() with EHOSTUNREACH, as host-unreach does.
        rawio.enable_errors(sock, self.family)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")  # RST, no TIME_WAIT
        sent = time.monotonic()
        error: OSError | None = None
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, sockaddr(self.family, self.address, port)), self._wait()
            )
        except TimeoutError:
            return None
        except OSError as exc:
            error = exc
        finally:
            # Checked even after a success: an error that came while connect() held the
            # socket is queued without failing it.
            icmp = _queued_icmp(sock)
            with contextlib.suppress(OSError):
                sock.close()
        if icmp is not None:
            return PortResult(port, "tcp", "filtered", _icmp_reason(self.family, icmp), icmp.offender)
        if error is not None:
            state, reason = _CONNECT_REASONS.get(error.errno or 0, ("filtered", f"error-{error.errno}"))
            if state == "closed":
                self._measured(time.monotonic() - sent)
            return PortResult(port, "tcp", state, reason)
        self._measured(time.monotonic() - sent)
        return PortResult(port, "tcp", "open", "syn-ack")


def _icmp_reason(family: int, icmp: ICMP | ICMPv6 | rawio.QueuedError) -> str:
    """nmap's reason for an ICMP error, from a packet or an error-queue entry."""
    kind, code = (
        (icmp.icmp_type, icmp.icmp_code) if isinstance(icmp, rawio.QueuedError) else (icmp.type, icmp.code)
    )
    return unreach_reason(family, code) if is_unreachable(family, kind) else f"icmp-{kind}-{code}"


def _queued_icmp(sock: socket.socket) -> rawio.QueuedError | None:
    """The ICMP error a failed connect() left on the socket's error queue, if any."""
    try:
        data, ancdata, _flags, addr = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except OSError:
        return None
    queued = rawio.parse_queued_error(ancdata, addr, data)
    if queued is None or queued.origin not in (rawio.SO_EE_ORIGIN_ICMP, rawio.SO_EE_ORIGIN_ICMP6):
        return None
    return queued
