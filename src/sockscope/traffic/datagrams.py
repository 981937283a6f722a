"""UDP, ICMP and raw bytes per socket and process, as deltas per sample, from the
eBPF counters (``socktrace``).

The kernel's map holds running totals per (socket, process); each ``deltas()``
reads them all and returns what moved since the previous read. A pair quiet for
``QUIET_ROUNDS`` reads is removed from the map (it would fill up otherwise); a
send racing that removal is the one thing that can be lost, and only on a socket
that had been idle for that long.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sockscope.inventory.model import InetAddress, Owner, Socket

from .model import ConnectionTraffic
from .processes import caller
from .rows import Rows
from .socktrace import SocketBytes, SockTrace

if TYPE_CHECKING:
    from sockscope.inventory.filter import SocketFilter

QUIET_ROUNDS: Final = 3
_PROTO_NAMES: Final = {socket.IPPROTO_UDP: "udp", 136: "udp",  # UDP-Lite counts as UDP
                       socket.IPPROTO_ICMP: "icmp", socket.IPPROTO_ICMPV6: "icmp",
                       132: "sctp"}


@dataclass(slots=True)
class DatagramDelta:
    """What one (socket, process) pair moved in the interval."""

    entry: SocketBytes
    proto: str  # "udp", "icmp", "sctp", "raw" (any other protocol on a raw socket)
    tx: int
    rx: int


def proto_name(protocol: int, sock_type: int) -> str:
    """"icmp" (ping sockets and raw ICMP sockets alike), "udp", "sctp"; "raw" for
    any other protocol, and for UDP or SCTP on a raw socket."""
    name = _PROTO_NAMES.get(protocol)
    if name == "icmp" or (name is not None and sock_type != socket.SOCK_RAW):
        return name
    return "raw"


def as_socket(netns: str, e: SocketBytes, proto: str) -> Socket:
    """The pair's socket as an inventory Socket, for the ss filter."""
    remote = InetAddress(e.remote, e.remote_port) if e.remote is not None and e.remote_port else None
    kind = "udp" if proto == "udp" else "raw"
    sock_type = "dgram" if e.type == socket.SOCK_DGRAM else "raw"
    return Socket(netns, e.family, kind, sock_type, "ESTAB" if remote else "UNCONN",
                  InetAddress(e.local, e.local_port), remote, 0, 0, 0, None, None)


class DatagramCounters:
    """The eBPF programs and the last totals read. Construction attaches the programs
    and takes the baseline: what moved before does not count."""

    def __init__(self) -> None:
        self._trace = SockTrace()
        self._last: dict[tuple[int, int], tuple[int, int]] = {}
        self._quiet: dict[tuple[int, int], int] = {}
        self._forwarded: dict[int, int] = {}
        try:
            self.deltas()
            self.forwarded()
        except BaseException:
            self.close()
            raise

    def deltas(self) -> list[DatagramDelta]:
        out: list[DatagramDelta] = []
        quiet: list[SocketBytes] = []
        last, seen = self._last, {}
        for e in self._trace.read():
            key = (e.sk, e.pid)
            tx0, rx0 = last.get(key, (0, 0))
            tx, rx = e.tx - tx0, e.rx - rx0
            if tx < 0 or rx < 0:  # a new entry under a reused key
                tx, rx = e.tx, e.rx
            seen[key] = (e.tx, e.rx)
            if tx or rx:
                self._quiet.pop(key, None)
                out.append(DatagramDelta(e, proto_name(e.protocol, e.type), tx, rx))
            else:
                rounds = self._quiet[key] = self._quiet.get(key, 0) + 1
                if rounds >= QUIET_ROUNDS:
                    quiet.append(e)
        for e in quiet:
            del seen[(e.sk, e.pid)]
            del self._quiet[(e.sk, e.pid)]
        self._trace.forget(quiet)
        self._last = seen
        self._quiet = {k: v for k, v in self._quiet.items() if k in seen}
        return out

    def forwarded(self) -> dict[int, int]:
        """Namespace inode -> bytes of frames it passed on that no socket sent, since
        the previous call."""
        now = self._trace.read_forwarded()
        last, self._forwarded = self._forwarded, now
        return {netns: total - last.get(netns, 0) for netns, total in now.items()
                if total != last.get(netns, 0)}

    def close(self) -> None:
        self._trace.close()


def add_rows(rows: Rows, deltas: list[DatagramDelta], forwarded: dict[int, int],
             names: dict[int, str], flt: SocketFilter | None, interval: float) -> set[int]:
    """UDP, ICMP and raw bytes into a sample's rows, each (socket, process) pair
    credited to the process that made the calls, and each namespace's forwarded
    frames into its ``unowned`` row (not when a filter is set: they match no
    socket); ``names``: namespace inode -> name, of the namespaces sampled.
    Returns the pids seen alive."""
    for inode, sent in forwarded.items():
        netns = names.get(inode)
        row = rows.unowned(netns) if netns is not None and flt is None else None
        if row is not None:
            rows.add_bytes(row, "forwarded", sent, 0)
    owners: dict[int, Owner] = {}
    for d in deltas:
        e = d.entry
        netns = names.get(e.netns)
        if netns is None:  # a namespace not sampled (-N, --pid), or one too new
            continue
        if flt is not None and not flt.match(as_socket(netns, e, d.proto)):
            continue
        owner = owners.get(e.pid)
        if owner is None:
            owner = owners[e.pid] = caller(e.pid, e.command)
        row = rows.process(owner, netns)
        if row is None:
            continue
        rows.add_bytes(row, d.proto, d.tx, d.rx)
        rows.connections.append(ConnectionTraffic(
            netns, d.proto, e.family, e.local, e.local_port, e.remote, e.remote_port,
            "ESTAB" if e.remote is not None else "UNCONN", None, e.pid, owner.command, 1,
            d.tx, d.rx, d.tx / interval, d.rx / interval, False))
        if e.remote is not None:
            remote = rows.remote(netns, e.remote)
            remote.tx_bytes += d.tx
            remote.rx_bytes += d.rx
    return {pid for pid, owner in owners.items() if owner.uid is not None}
