"""The rows of one sample, built up source by source: per process (and namespace),
per connection, per remote host."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from sockscope.inventory.model import Owner

from .model import (
    CLOSED,
    UNOWNED,
    ConnectionTraffic,
    ProcessTraffic,
    ProtoBytes,
    RemoteTraffic,
    TrafficSample,
    TrafficTotals,
)

ProcessKey = tuple[int | None, str, str]  # pid (None: a "closed" row), command, netns name
CLOSED_COMMAND = "(closed before sampled)"
UNOWNED_COMMAND = "(forwarded or bridged)"


class Rows:
    """``keep``: the --pid/--user/--command test (None: every process);
    ``cgroup_of``: pid -> (cgroup path, container)."""

    def __init__(self, keep: Callable[[Owner], bool] | None,
                 cgroup_of: Callable[[int], tuple[str | None, str | None]]) -> None:
        self.processes: dict[ProcessKey, ProcessTraffic] = {}
        self.remotes: dict[tuple[str, str], RemoteTraffic] = {}
        self.connections: list[ConnectionTraffic] = []
        self._keep = keep
        self._cgroup_of = cgroup_of

    def process(self, owner: Owner | None, netns: str) -> ProcessTraffic | None:
        """The row of this process in this namespace (None: filtered out); no
        owner: the namespace's row of connections closed before any sample saw them."""
        if self._keep is not None and (owner is None or not self._keep(owner)):
            return None
        key: ProcessKey = ((owner.pid, owner.command, netns) if owner is not None
                           else (None, CLOSED_COMMAND, netns))
        row = self.processes.get(key)
        if row is None:
            if owner is None:
                row = ProcessTraffic(None, CLOSED_COMMAND, None, None, netns, None, None, kind=CLOSED)
            else:
                cgroup, container = self._cgroup_of(owner.pid)
                row = ProcessTraffic(owner.pid, owner.command, owner.user, owner.uid, netns,
                                     container, cgroup)
            self.processes[key] = row
        return row

    def unowned(self, netns: str) -> ProcessTraffic | None:
        """The namespace's row of frames it passed on that no socket sent (None
        when processes are filtered: these belong to none)."""
        if self._keep is not None:
            return None
        key: ProcessKey = (None, UNOWNED_COMMAND, netns)
        row = self.processes.get(key)
        if row is None:
            row = self.processes[key] = ProcessTraffic(None, UNOWNED_COMMAND, None, None, netns, None,
                                                       None, kind=UNOWNED)
        return row

    def remote(self, netns: str, address: str) -> RemoteTraffic:
        row = self.remotes.get((netns, address))
        if row is None:
            row = self.remotes[(netns, address)] = RemoteTraffic(netns, address)
        return row

    @staticmethod
    def add_bytes(row: ProcessTraffic, proto: str, tx: int, rx: int) -> None:
        row.tx_bytes += tx
        row.rx_bytes += rx
        counts = row.by_proto.get(proto)
        if counts is None:
            counts = row.by_proto[proto] = ProtoBytes()
        counts.tx_bytes += tx
        counts.rx_bytes += rx

    def finish(self, interval: float, alive: set[int], source: str, notes: list[str]) -> TrafficSample:
        """The sample: rates over ``interval``; a process neither in ``alive`` nor
        in /proc is marked exited."""
        for row in self.processes.values():
            row.tx_rate = row.tx_bytes / interval
            row.rx_rate = row.rx_bytes / interval
            row.exited = row.pid is not None and row.pid not in alive and not _running(row.pid)
        for remote in self.remotes.values():
            remote.tx_rate = remote.tx_bytes / interval
            remote.rx_rate = remote.rx_bytes / interval
        return TrafficSample(
            time.time(), interval, source,
            sorted(self.processes.values(), key=lambda p: -(p.tx_bytes + p.rx_bytes)),
            sorted(self.connections, key=lambda c: -(c.tx_bytes + c.rx_bytes)),
            sorted((r for r in self.remotes.values() if r.tx_bytes or r.rx_bytes or r.connections),
                   key=lambda r: -(r.tx_bytes + r.rx_bytes)),
            notes)


def _running(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


TotalsKey = tuple[str, str | None, str, str | None, int | None]  # command user netns container pid


def update_totals(totals: dict[TotalsKey, TrafficTotals], sample: TrafficSample, now: float,
                  per_pid: bool, forget_after: float) -> None:
    """Add a sample to the monotonic totals (``Sampler.totals()``); entries whose
    processes have all gone are dropped ``forget_after`` seconds after their last change."""
    for entry in totals.values():
        entry.connections = 0
    for row in sample.processes:
        key: TotalsKey = (row.command, row.user, row.netns, row.container,
                          row.pid if per_pid else None)
        t = totals.get(key)
        if t is None:
            t = totals[key] = TrafficTotals(*key)
        t.connections += row.connections
        tcp = row.by_proto.get("tcp")
        if tcp is not None and (tcp.tx_bytes or tcp.rx_bytes):
            t.tcp_sent_bytes += tcp.tx_bytes
            t.tcp_received_bytes += tcp.rx_bytes
            t.last_change = now
        udp = row.by_proto.get("udp")
        if udp is not None and (udp.tx_bytes or udp.rx_bytes):
            t.udp_sent_bytes += udp.tx_bytes
            t.udp_received_bytes += udp.rx_bytes
            t.last_change = now
        if row.tcp_retransmitted_segments:
            t.tcp_retransmitted_segments += row.tcp_retransmitted_segments
            t.last_change = now
        if row.connections:
            t.last_change = now
    for key in [k for k, t in totals.items()
                if not t.connections and now - t.last_change > forget_after]:
        del totals[key]
