"""The socket inventory's data model: plain dataclasses the API returns.

``to_dict`` gives the documented JSON shape (README "JSON schema"); keys may be
added over time, never renamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# Kernel TCP state numbers (include/net/tcp_states.h) and the names we print.
# CLOSE is printed as UNCONN, as ss does, since for UDP/raw/unix it means
# "not connected" rather than "closed".
STATE_NAMES: dict[int, str] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "UNCONN",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
STATE_NUMBERS: dict[str, int] = {name: num for num, name in STATE_NAMES.items()}
ALL_STATES_MASK = 0xFFFFFFFF


@dataclass(slots=True)
class InetAddress:
    address: str
    port: int

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "port": self.port}

    def __str__(self) -> str:
        if ":" in self.address:
            return f"[{self.address}]:{self.port if self.port else '*'}"
        return f"{self.address}:{self.port if self.port else '*'}"


@dataclass(slots=True)
class UnixAddress:
    path: str
    abstract: bool
    exists: bool | None = None  # filled by ``-x``: does the path still exist on disk?

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "abstract": self.abstract}
        if self.exists is not None:
            out["exists"] = self.exists
        return out

    def __str__(self) -> str:
        return ("@" + self.path) if self.abstract else self.path


@dataclass(slots=True)
class PacketAddress:
    protocol: int  # ethertype in host order, 3 = ETH_P_ALL
    interface: str | None  # None: bound to all interfaces
    ifindex: int

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "interface": self.interface, "ifindex": self.ifindex}

    def __str__(self) -> str:
        proto = "all" if self.protocol == 3 else f"0x{self.protocol:04x}"
        return f"{proto}:{self.interface or '*'}"


@dataclass(slots=True)
class NetlinkAddress:
    protocol: str  # "route", "sock_diag", ... or the number as a string
    portid: int
    groups: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "portid": self.portid, "groups": self.groups}

    def __str__(self) -> str:
        return f"{self.protocol}:{self.portid}"


Address = InetAddress | UnixAddress | PacketAddress | NetlinkAddress


@dataclass(slots=True)
class Owner:
    """A process holding the socket through one file descriptor."""

    pid: int
    command: str
    fd: int
    user: str | None = None
    uid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "command": self.command, "fd": self.fd, "user": self.user, "uid": self.uid}


@dataclass(slots=True)
class TcpInfo:
    """The useful part of struct tcp_info (times in milliseconds)."""

    rtt_ms: float
    rttvar_ms: float
    rto_ms: float
    snd_cwnd: int
    snd_ssthresh: int
    snd_mss: int
    rcv_mss: int
    retransmits: int
    total_retrans: int
    lost: int
    unacked: int
    bytes_acked: int
    bytes_received: int
    bytes_sent: int | None
    bytes_retrans: int | None
    segs_out: int
    segs_in: int
    delivery_rate: int
    pacing_rate: int
    min_rtt_ms: float
    last_send_ms: int
    last_recv_ms: int
    congestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Memory:
    """Socket memory (sk_meminfo, bytes)."""

    rmem_alloc: int
    rcvbuf: int
    wmem_alloc: int
    sndbuf: int
    fwd_alloc: int
    wmem_queued: int
    optmem: int
    backlog: int
    drops: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Socket:
    """One socket as the kernel reports it, with the processes that hold it."""

    netns: str
    family: str  # inet, inet6, unix, packet, netlink
    proto: str  # tcp, udp, raw, unix, packet, netlink
    type: str  # stream, dgram, seqpacket, raw
    state: str  # STATE_NAMES values
    local: Address | None
    remote: Address | None
    recv_q: int
    send_q: int
    inode: int
    uid: int | None
    cookie: int | None = None
    interface: str | None = None  # bound device (SO_BINDTODEVICE / scope), if any
    owners: list[Owner] = field(default_factory=list)
    peer_inode: int | None = None  # unix: the socket on the other end
    peer_owners: list[Owner] | None = None  # unix: who holds the other end
    tcp_info: TcpInfo | None = None
    memory: Memory | None = None
    cgroup_id: int | None = None
    mark: int | None = None
    timer: str | None = None  # tcp timer: "on", "keepalive", "timewait", "persist"
    timer_expires_ms: int | None = None
    source: str = "sock_diag"  # or "procfs" when read from the /proc/net fallback
    protocol_number: int | None = None  # raw sockets: the IP protocol (1 = ICMP)
    vfs: tuple[int, int] | None = None  # unix: (st_dev, st_ino) of the socket file bound
    bound_ifindex: int = 0  # SO_BINDTODEVICE index; names the socket exactly for SOCK_DESTROY

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "netns": self.netns,
            "family": self.family,
            "proto": self.proto,
            "type": self.type,
            "state": self.state,
            "local": self.local.to_dict() if self.local is not None else None,
            "remote": self.remote.to_dict() if self.remote is not None else None,
            "recv_q": self.recv_q,
            "send_q": self.send_q,
            "inode": self.inode,
            "uid": self.uid,
            "cookie": self.cookie,
            "interface": self.interface,
            "owners": [o.to_dict() for o in self.owners],
        }
        if self.family == "unix":
            out["peer_inode"] = self.peer_inode
            out["peer_owners"] = (
                [o.to_dict() for o in self.peer_owners] if self.peer_owners is not None else None
            )
        if self.protocol_number is not None:
            out["protocol_number"] = self.protocol_number
        if self.tcp_info is not None:
            out["tcp_info"] = self.tcp_info.to_dict()
        if self.memory is not None:
            out["memory"] = self.memory.to_dict()
        if self.cgroup_id is not None:
            out["cgroup_id"] = self.cgroup_id
        if self.mark is not None:
            out["mark"] = self.mark
        if self.timer is not None:
            out["timer"] = {"name": self.timer, "expires_ms": self.timer_expires_ms}
        if self.source != "sock_diag":
            out["source"] = self.source
        return out


class InventoryWarning(UserWarning):
    """Something the inventory could not see (a namespace it could not enter,
    owners it could not read); the same text is in the result's ``notes``."""
