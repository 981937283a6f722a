"""The small records of probe results: one reply, one error, one probe of a
trace, one hop, one port. `Record`s rather than dataclasses or NamedTuples: trace
builds them on its start-up path, where those imports (typing, collections, re)
would cost every traceroute milliseconds. The results that hold them are the
dataclasses of ``model.py``."""

from __future__ import annotations

from sockscope.record import Record

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    from typing import Any


def ms(value: float | None) -> float | None:
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
            "rtt_ms": ms(self.rtt_ms),
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
        out: dict[str, Any] = {"address": self.address, "rtt_ms": ms(self.rtt_ms), "icmp": icmp}
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
