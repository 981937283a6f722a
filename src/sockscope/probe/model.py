"""Result dataclasses of ping, trace and scan; ``to_dict()`` is the JSON schema
(keys may be added, never renamed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True, slots=True)
class PingReply:
    seq: int
    ttl: int | None
    rtt_ms: float
    address: str  # who answered
    size: int  # ICMP bytes received (header + data), as ping prints them

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ttl": self.ttl,
            "rtt_ms": _ms(self.rtt_ms),
            "from": self.address,
            "bytes": self.size,
        }


@dataclass(frozen=True, slots=True)
class PingError:
    """An ICMP error about one of our echo requests (TTL exceeded, unreachable)."""

    seq: int
    address: str
    icmp_type: int
    icmp_code: int
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "from": self.address,
            "icmp": {"type": self.icmp_type, "code": self.icmp_code},
            "error": self.text,
        }


@dataclass(slots=True)
class PingResult:
    destination: str
    address: str
    size: int  # ICMP data bytes per request
    sent: int = 0
    replies: list[PingReply] = field(default_factory=list)
    errors: list[PingError] = field(default_factory=list)
    ignored: int = 0  # ICMP messages that were not answers to us
    malformed: int = 0
    elapsed_ms: float = 0.0
    unprivileged: bool = False  # sent over an ICMP datagram socket

    @property
    def received(self) -> int:
        return len(self.replies)

    @property
    def loss(self) -> float:
        """Fraction of requests without a reply (0.0 - 1.0)."""
        return 0.0 if self.sent == 0 else (self.sent - self.received) / self.sent

    def rtt_stats(self) -> tuple[float, float, float, float] | None:
        """(min, avg, max, mdev) in ms, mdev as iputils computes it."""
        rtts = [r.rtt_ms for r in self.replies]
        if not rtts:
            return None
        avg = sum(rtts) / len(rtts)
        mean_sq = sum(r * r for r in rtts) / len(rtts)
        return min(rtts), avg, max(rtts), math.sqrt(max(mean_sq - avg * avg, 0.0))

    def to_dict(self) -> dict[str, Any]:
        stats = self.rtt_stats()
        rtt = (
            None if stats is None else dict(zip(("min", "avg", "max", "mdev"), map(_ms, stats), strict=True))
        )
        return {
            "destination": self.destination,
            "address": self.address,
            "sent": self.sent,
            "received": self.received,
            "loss": round(self.loss, 4),
            "rtt_ms": rtt,
            "replies": [r.to_dict() for r in self.replies],
            "errors": [e.to_dict() for e in self.errors],
            "ignored": self.ignored,
            "malformed": self.malformed,
        }


@dataclass(slots=True)
class TraceProbe:
    ttl: int
    address: str | None = None  # None: no answer
    rtt_ms: float | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    mark: str | None = None  # !H, !N, !P, !X, !<code>
    name: str | None = None
    notes: list[str] = field(default_factory=list)  # what the quoted packet shows (-v)

    def to_dict(self) -> dict[str, Any]:
        icmp = None if self.icmp_type is None else {"type": self.icmp_type, "code": self.icmp_code}
        out: dict[str, Any] = {
            "address": self.address,
            "rtt_ms": _ms(self.rtt_ms),
            "icmp": icmp,
            "mark": self.mark,
        }
        if self.name is not None:
            out["name"] = self.name
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(slots=True)
class TraceHop:
    ttl: int
    probes: list[TraceProbe]

    def to_dict(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "probes": [p.to_dict() for p in self.probes]}


@dataclass(slots=True)
class TraceResult:
    destination: str
    address: str
    method: str  # "icmp", "udp", "tcp"
    port: int | None
    packet_size: int
    max_ttl: int
    hops: list[TraceHop] = field(default_factory=list)
    reached: bool = False
    ignored: int = 0
    malformed: int = 0
    unprivileged: bool = False
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "address": self.address,
            "method": self.method,
            "port": self.port,
            "hops": [h.to_dict() for h in self.hops],
            "reached": self.reached,
            "ignored": self.ignored,
            "malformed": self.malformed,
        }


@dataclass(frozen=True, slots=True)
class PortResult:
    port: int
    proto: str  # "tcp" or "udp"
    state: str  # "open", "closed", "filtered", "open|filtered"
    reason: str  # syn-ack, reset, conn-refused, port-unreach, host-unreach, no-response...
    reason_from: str | None = None  # who sent the ICMP error, when one decided it

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "port": self.port,
            "proto": self.proto,
            "state": self.state,
            "reason": self.reason,
        }
        if self.reason_from is not None:
            out["reason_from"] = self.reason_from
        return out


@dataclass(slots=True)
class ScanResult:
    host: str
    address: str
    method: str  # "connect", "syn", "udp"
    # Not in repr: 65,535 of them would make every repr (asyncio takes some) slow.
    ports: list[PortResult] = field(default_factory=list, repr=False)
    probes_sent: int = 0
    ignored: int = 0
    malformed: int = 0
    elapsed_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "method": self.method,
            "ports": [p.to_dict() for p in self.ports],
            "probes_sent": self.probes_sent,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }
