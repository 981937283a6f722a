"""Result types of ping, trace and scan; ``to_dict()`` is the JSON schema (keys
may be added, never renamed). Small records are `Record`s and the results plain
classes: dataclasses or NamedTuples would cost every traceroute milliseconds of
start-up (they import typing, collections, re)."""

from __future__ import annotations

from sockscope.record import Record

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import Any


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class PingReply(Record):
    _fields = ("seq", "ttl", "rtt_ms", "address", "size", "duplicate")
    __slots__ = _fields

    def __init__(
        self, seq: int, ttl: int | None, rtt_ms: float, address: str, size: int, duplicate: bool = False
    ) -> None:
        self.seq, self.ttl, self.rtt_ms = seq, ttl, rtt_ms
        self.address = address  # who answered
        self.size = size  # ICMP bytes received (header + data), as ping prints them
        self.duplicate = duplicate  # a second reply to the same request (ping's "DUP!")

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ttl": self.ttl,
            "rtt_ms": _ms(self.rtt_ms),
            "from": self.address,
            "bytes": self.size,
        }


class PingError(Record):
    """An ICMP error about one of our echo requests (TTL exceeded, unreachable)."""

    _fields = ("seq", "address", "icmp_type", "icmp_code", "text")
    __slots__ = _fields

    def __init__(self, seq: int, address: str, icmp_type: int, icmp_code: int, text: str) -> None:
        self.seq, self.address, self.icmp_type, self.icmp_code = seq, address, icmp_type, icmp_code
        self.text = text

    def to_dict(self) -> dict[str, Any]:
        icmp = {"type": self.icmp_type, "code": self.icmp_code}
        return {"seq": self.seq, "from": self.address, "icmp": icmp, "error": self.text}


class PingResult:
    def __init__(self, destination: str, address: str, size: int, sent: int = 0) -> None:
        self.destination, self.address = destination, address
        self.size = size  # ICMP data bytes per request
        self.sent = sent
        self.replies: list[PingReply] = []
        self.errors: list[PingError] = []
        self.duplicates = 0  # replies to a request already answered: not in ``replies``
        self.duplicate_rtts: list[float] = []  # theirs, which iputils counts in its RTT figures
        self.ignored = 0  # ICMP messages that were not answers to us
        self.malformed = 0
        self.elapsed_ms = 0.0
        self.unprivileged = False  # sent over an ICMP datagram socket

    def __repr__(self) -> str:
        return f"PingResult({self.address}, sent={self.sent}, received={self.received})"

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
        rtt = (
            None if stats is None else dict(zip(("min", "avg", "max", "mdev"), map(_ms, stats), strict=True))
        )
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
            "ignored": self.ignored,
            "malformed": self.malformed,
        }


class TraceProbe(Record):
    _fields = ("ttl", "address", "rtt_ms", "icmp_type", "icmp_code", "mark", "name", "notes")
    __slots__ = _fields

    def __init__(
        self,
        ttl: int,
        address: str | None = None,  # None: no answer
        rtt_ms: float | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
        mark: str | None = None,  # !H, !N, !P, !X, !<code>
        name: str | None = None,
        notes: tuple[str, ...] = (),  # what the quoted packet shows (-v)
    ) -> None:
        self.ttl, self.address, self.rtt_ms = ttl, address, rtt_ms
        self.icmp_type, self.icmp_code, self.mark = icmp_type, icmp_code, mark
        self.name, self.notes = name, notes

    def to_dict(self) -> dict[str, Any]:
        icmp = None if self.icmp_type is None else {"type": self.icmp_type, "code": self.icmp_code}
        out: dict[str, Any] = {"address": self.address, "rtt_ms": _ms(self.rtt_ms), "icmp": icmp}
        out["mark"] = self.mark
        if self.name is not None:
            out["name"] = self.name
        if self.notes:
            out["notes"] = list(self.notes)
        return out


class TraceHop(Record):
    _fields = ("ttl", "probes")
    __slots__ = _fields

    def __init__(self, ttl: int, probes: list[TraceProbe]) -> None:
        self.ttl, self.probes = ttl, probes

    def to_dict(self) -> dict[str, Any]:
        return {"ttl": self.ttl, "probes": [p.to_dict() for p in self.probes]}


class TraceResult:
    def __init__(
        self, destination: str, address: str, method: str, port: int | None, packet_size: int, max_ttl: int
    ) -> None:
        self.destination, self.address = destination, address
        self.method = method  # "icmp", "udp", "tcp"
        self.port, self.packet_size, self.max_ttl = port, packet_size, max_ttl
        self.hops: list[TraceHop] = []
        self.reached = False
        self.ignored = 0
        self.malformed = 0
        self.unprivileged = False
        self.notes: list[str] = []  # how the trace was done, where that is not the usual way
        self.fallback: str | None = None  # why ``method`` is not the method asked for
        self.elapsed_ms = 0.0

    def __repr__(self) -> str:
        return f"TraceResult({self.address}, {self.method}, hops={len(self.hops)}, reached={self.reached})"

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
            "notes": self.notes,
        }


class PortResult(Record):
    _fields = ("port", "proto", "state", "reason", "reason_from")
    __slots__ = _fields

    def __init__(
        self,
        port: int,
        proto: str,  # "tcp" or "udp"
        state: str,  # "open", "closed", "filtered", "open|filtered"
        reason: str,  # syn-ack, reset, conn-refused, port-unreach, host-unreach, no-response...
        reason_from: str | None = None,  # who sent the ICMP error, when one decided it
    ) -> None:
        self.port, self.proto, self.state, self.reason = port, proto, state, reason
        self.reason_from = reason_from

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"port": self.port, "proto": self.proto, "state": self.state}
        out["reason"] = self.reason
        if self.reason_from is not None:
            out["reason_from"] = self.reason_from
        return out


class ScanResult:
    def __init__(self, host: str, address: str, method: str) -> None:
        self.host, self.address = host, address
        self.method = method  # "connect", "syn", "udp"
        self.ports: list[PortResult] = []
        self.probes_sent = 0
        self.ignored = 0
        self.malformed = 0
        self.elapsed_ms = 0.0

    def __repr__(self) -> str:  # never the 65,535 ports: asyncio takes reprs of results
        return f"ScanResult({self.address}, {self.method}, ports={len(self.ports)})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "address": self.address,
            "method": self.method,
            "ports": [p.to_dict() for p in self.ports],
            "probes_sent": self.probes_sent,
            "elapsed_ms": round(self.elapsed_ms, 1),
        }
