"""What ping, trace and scan return: dataclasses whose ``to_dict()`` is the JSON
schema (keys may be added, never renamed). The records they hold (one reply, one
probe, one hop, one port) are in ``records.py`` and re-exported here.

`trace` does not import this module until a trace is over (``dataclasses`` costs a
traceroute about 12 ms of start-up: it imports inspect, re and enum): while it runs,
its state is a plain `sockscope.probe.trace.TraceRun` with the same fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sockscope.probe.records import PingError, PingReply, PortResult, TraceHop, TraceProbe, ms

__all__ = [
    "PingError",
    "PingReply",
    "PingResult",
    "PortResult",
    "ScanResult",
    "TraceHop",
    "TraceProbe",
    "TraceResult",
]


@dataclass(eq=False)
class PingResult:
    destination: str  # as given
    address: str  # what it resolved to
    size: int  # ICMP data bytes per request
    sent: int = 0
    replies: list[PingReply] = field(default_factory=list, repr=False)
    errors: list[PingError] = field(default_factory=list, repr=False)
    duplicates: int = 0  # replies to a request already answered: not in ``replies``
    duplicate_rtts: list[float] = field(default_factory=list, repr=False)  # counted in the RTT figures
    ignored: int = 0  # ICMP messages that were not answers to us
    malformed: int = 0
    elapsed_ms: float = 0.0
    unprivileged: bool = False  # sent over an ICMP datagram socket
    # Requests the kernel refused to send (no route, message too long...), as
    # (sequence, reason); iputils prints each and carries on.
    send_errors: list[tuple[int, str]] = field(default_factory=list, repr=False)

    @property
    def received(self) -> int:
        return len(self.replies)

    @property
    def loss(self) -> float:
        """Fraction of requests without a reply (0.0 - 1.0)."""
        return 0.0 if self.sent == 0 else (self.sent - self.received) / self.sent

    def rtt_stats(self) -> tuple[float, float, float, float] | None:
        """(min, avg, max, mdev) in ms over every reply, duplicates included, as
        iputils computes them."""
        rtts = [r.rtt_ms for r in self.replies] + self.duplicate_rtts
        if not rtts:
            return None
        avg = sum(rtts) / len(rtts)
        mean_sq = sum(r * r for r in rtts) / len(rtts)
        return min(rtts), avg, max(rtts), max(mean_sq - avg * avg, 0.0) ** 0.5

    def to_dict(self) -> dict[str, Any]:
        stats = self.rtt_stats()
        rtt = None if stats is None else dict(zip(("min", "avg", "max", "mdev"), map(ms, stats), strict=True))
        return {
            "destination": self.destination,
            "address": self.address,
            "sent": self.sent,
            "received": self.received,
            "duplicates": self.duplicates,
            "loss": round(self.loss, 4),
            "rtt_ms": rtt,
            "replies": [r.to_dict() for r in self.replies],
            "errors": [e.to_dict() for e in self.errors],
            "send_errors": [{"seq": seq, "error": text} for seq, text in self.send_errors],
            "ignored": self.ignored,
            "malformed": self.malformed,
        }


@dataclass(eq=False)
class TraceResult:
    destination: str
    address: str
    method: str  # "icmp", "udp", "tcp": what was really used
    port: int | None
    packet_size: int  # whole probe packets, IP header included
    max_ttl: int
    hops: list[TraceHop] = field(default_factory=list, repr=False)
    reached: bool = False
    ignored: int = 0
    malformed: int = 0
    unprivileged: bool = False
    notes: list[str] = field(default_factory=list)  # how the trace was done, where not the usual way
    fallback: str | None = None  # why ``method`` is not the method asked for
    elapsed_ms: float = 0.0
    # The path MTU found with ``mtu=True`` (traceroute --mtu), else None.
    path_mtu: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "destination": self.destination,
            "address": self.address,
            "method": self.method,
            "port": self.port,
            "hops": [h.to_dict() for h in self.hops],
            "reached": self.reached,
            "ignored": self.ignored,
            "malformed": self.malformed,
            "notes": self.notes,
        }
        if self.path_mtu is not None:
            out["path_mtu"] = self.path_mtu
        return out


@dataclass(eq=False)
class ScanResult:
    host: str
    address: str
    method: str  # "connect", "syn", "udp"
    ports: list[PortResult] = field(default_factory=list, repr=False)  # never 65,535 in a repr
    probes_sent: int = 0
    ignored: int = 0
    malformed: int = 0
    elapsed_ms: float = 0.0
    # Where the answer may be incomplete, and why (e.g. ICMP rate limiting seen).
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "method": self.method,
            "ports": [p.to_dict() for p in self.ports],
            "probes_sent": self.probes_sent,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "warnings": self.warnings,
        }
