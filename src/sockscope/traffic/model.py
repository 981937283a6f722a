"""What traffic accounting returns: plain dataclasses; ``to_dict`` is the JSON schema
of ``sockscope top --jsonl`` (README "sockscope top"). Keys may be added, never renamed.

Bytes are transport payload bytes (what applications sent and received, as tcp_info
and iperf3 count them); ``tx`` is what the host's socket sent, ``rx`` what it received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Row kinds: a process; connections that opened and closed between two samples
# whose holder no sample saw; bytes no socket on the host owns.
PROCESS = "process"
CLOSED = "closed"
UNOWNED = "unowned"


@dataclass(slots=True)
class ProtoBytes:
    tx_bytes: int = 0
    rx_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes}


@dataclass(slots=True)
class ProcessTraffic:
    """One process in one network namespace over one interval."""

    pid: int | None
    command: str
    user: str | None
    uid: int | None
    netns: str
    container: str | None
    cgroup: str | None
    connections: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_rate: float = 0.0
    rx_rate: float = 0.0
    by_proto: dict[str, ProtoBytes] = field(default_factory=dict)
    tcp_retransmitted_segments: int = 0
    kind: str = PROCESS
    exited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "command": self.command, "user": self.user, "uid": self.uid,
            "netns": self.netns, "container": self.container, "cgroup": self.cgroup,
            "connections": self.connections, "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes,
            "tx_rate": round(self.tx_rate, 1), "rx_rate": round(self.rx_rate, 1),
            "by_proto": {name: b.to_dict() for name, b in sorted(self.by_proto.items())},
            "tcp_retransmitted_segments": self.tcp_retransmitted_segments,
            "kind": self.kind, "exited": self.exited,
        }


@dataclass(slots=True)
class ConnectionTraffic:
    """One socket that moved bytes in the interval."""

    netns: str
    proto: str
    family: str
    local: str
    local_port: int
    remote: str | None
    remote_port: int | None
    state: str
    cookie: int | None
    pid: int | None
    command: str | None
    holders: int  # processes holding the socket (after fork or fd passing: more than one)
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_rate: float = 0.0
    rx_rate: float = 0.0
    closed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "netns": self.netns, "proto": self.proto, "family": self.family,
            "local": self.local, "local_port": self.local_port,
            "remote": self.remote, "remote_port": self.remote_port, "state": self.state,
            "cookie": self.cookie, "pid": self.pid, "command": self.command,
            "holders": self.holders, "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes,
            "tx_rate": round(self.tx_rate, 1), "rx_rate": round(self.rx_rate, 1),
            "closed": self.closed,
        }


@dataclass(slots=True)
class RemoteTraffic:
    """Everything exchanged with one remote address from one namespace."""

    netns: str
    address: str
    connections: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_rate: float = 0.0
    rx_rate: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "netns": self.netns, "address": self.address, "connections": self.connections,
            "tx_bytes": self.tx_bytes, "rx_bytes": self.rx_bytes,
            "tx_rate": round(self.tx_rate, 1), "rx_rate": round(self.rx_rate, 1),
        }


@dataclass(slots=True)
class TrafficSample:
    """One interval: ``time`` (unix time at its end), ``interval`` (seconds it covers)."""

    time: float
    interval: float
    source: str
    processes: list[ProcessTraffic]
    connections: list[ConnectionTraffic]
    remotes: list[RemoteTraffic]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": round(self.time, 3), "interval": round(self.interval, 3),
            "source": self.source,
            "processes": [p.to_dict() for p in self.processes],
            "connections": [c.to_dict() for c in self.connections],
            "remotes": [r.to_dict() for r in self.remotes],
            "notes": list(self.notes),
        }


@dataclass(slots=True)
class TrafficTotals:
    """Monotonic totals since the sampler started, per (command, user, netns,
    container[, pid]): what a Prometheus collector exports as counters."""

    command: str
    user: str | None
    netns: str
    container: str | None
    pid: int | None
    tcp_sent_bytes: int = 0
    tcp_received_bytes: int = 0
    tcp_retransmitted_segments: int = 0
    udp_sent_bytes: int = 0
    udp_received_bytes: int = 0
    connections: int = 0  # a gauge: held now
    last_change: float = 0.0  # monotonic time of the last change (for forgetting)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command, "user": self.user, "netns": self.netns,
            "container": self.container, "pid": self.pid,
            "tcp_sent_bytes": self.tcp_sent_bytes, "tcp_received_bytes": self.tcp_received_bytes,
            "tcp_retransmitted_segments": self.tcp_retransmitted_segments,
            "udp_sent_bytes": self.udp_sent_bytes, "udp_received_bytes": self.udp_received_bytes,
            "connections": self.connections,
        }
