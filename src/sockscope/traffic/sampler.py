"""The sampler: byte counters per socket, joined with the inventory's owners and
namespaces, turned into per-process, per-connection and per-remote rows.

One ``Sampler`` serves any number of consumers: ``collect()`` takes one sample
(the bytes moved since the previous one), ``latest(max_age)`` hands out the last
sample while it is young enough (concurrent callers share one collection), and
``totals()`` gives monotonic per-process totals for a long-running exporter.

Sources (``source``; ``sample.source`` says which ran): TCP always from the
kernel's per-socket counters (tcp_info, ``tcp.py``); UDP, ICMP and raw traffic,
with ``bpf`` (the default where eBPF may run), from the kernel's send and receive
tracepoints (``datagrams.py``), credited to the process that made each call;
where eBPF may not run, with ``capture``, UDP from a header-only capture of each
namespace's interfaces (``capture_source.py``), credited to the socket's holder.
With ``counters`` only TCP is counted, and each sample's notes say so.

How TCP bytes are attributed:

- A socket seen by a dump belongs to the processes holding it then (the
  inventory's /proc fd scan); one closed since keeps the holder it was last seen
  with, so a process that exits is still credited with its last bytes.
- A socket held by several processes (after fork, or an fd passed and kept) is
  credited whole to one of them, the youngest (after a fork, the child: in a
  forking server the one doing the I/O); its connection row says how many hold it.
- A connection that opened and closed between two samples was never seen with a
  holder: its bytes go to the process holding the listener it was accepted on,
  or, for an outgoing one, to a ``closed`` row of its namespace.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockscope.errors import PermissionNeeded, UsageError
from sockscope.inventory.model import InetAddress, Owner, Socket
from sockscope.inventory.owners import OwnerMap, all_pids, scan_owners
from sockscope.inventory.query import filter_arg, namespace_refs, process_filter
from sockscope.platform import linux

from . import cgroups, processes
from .model import ConnectionTraffic, TrafficSample, TrafficTotals
from .rows import Rows, TotalsKey, update_totals
from .sources import SOURCE_COUNTERS, SOURCES, Captured, OtherTraffic
from .tcp import NamespaceTcp, TcpReading

if TYPE_CHECKING:
    from sockscope.inventory.filter import SocketFilter


_MISSING_ROUNDS = 600


@dataclass(slots=True)
class _Holder:
    """Who a socket's bytes are credited to, and how many processes hold it."""

    owner: Owner
    holders: int


@dataclass(slots=True)
class _Tracked:
    netns: int  # namespace inode
    tx: int
    rx: int
    retrans: int
    holder: _Holder | None
    missing: int = 0  # dumps in a row that did not show it


@dataclass(slots=True)
class _Namespace:
    ref: linux.NetnsRef
    tcp: NamespaceTcp


@dataclass(slots=True)
class _Delta:
    reading: TcpReading
    netns: linux.NetnsRef
    tx: int
    rx: int
    retrans: int
    holder: _Holder | None
    closed: bool




class Sampler:
    """Byte accounting for every namespace (``netns=None``) or the ones named.

    ``filter``: an ss filter expression; only matching sockets count.
    ``pid``/``user``/``command``: keep only those processes' rows.
    ``per_pid``: ``totals()`` keeps pids apart (else one entry per command, user,
    namespace and container). ``forget_after``: seconds a totals entry whose
    processes have all gone is kept after its last change. ``source``: "auto"
    (``bpf`` where eBPF may run, else ``capture``), "bpf" (an error where it may
    not), "capture" (UDP from a capture) or "counters" (TCP only).
    """

    def __init__(self, netns: str | Sequence[str] | None = None, *,
                 filter: str | Sequence[str] | None = None,
                 pid: int | Iterable[int] | None = None, user: str | int | None = None,
                 command: str | None = None, per_pid: bool = False,
                 forget_after: float = 600.0, source: str = "auto") -> None:
        if source not in SOURCES:
            raise UsageError(f"unknown traffic source {source!r} (expected one of: {', '.join(SOURCES)})")
        self._filter: SocketFilter | None = filter_arg(filter)
        missing = processes.missing_capabilities()
        if missing:
            raise PermissionNeeded("traffic accounting needs root (to enter every network namespace "
                                   "and to see which process holds each socket: "
                                   f"{' and '.join(missing)})")
        # Named namespaces are resolved once: a name deleted later is a namespace gone
        # (not a usage error), and one added again under that name is another one.
        self._named = None if netns is None else namespace_refs(netns, False, [])
        self._gone: list[str] = []
        # --pid/--user/--command: only those processes' namespaces are read (when no
        # netns is named), and the owner scan reads only their fds.
        self._scan_filter = process_filter(pid, user, command)
        self._keep = processes.owner_predicate(self._scan_filter)
        self._per_pid = per_pid
        self._forget_after = forget_after
        self._lock = threading.Lock()
        self._namespaces: dict[int, _Namespace] = {}
        self._tracked: dict[int, _Tracked] = {}
        self._cgroups: dict[int, tuple[str | None, str | None]] = {}
        self._totals: dict[TotalsKey, TrafficTotals] = {}
        self._latest: TrafficSample | None = None
        self._closed = False
        self._last_time = time.monotonic()
        self._other: OtherTraffic | None = None
        try:
            self._refresh_namespaces(baseline=True)
            self._other = OtherTraffic(source, [ns.ref for ns in self._namespaces.values()])
        except BaseException:
            self.close()
            raise
        self._last_time = time.monotonic()  # the first sample counts from the baseline

    @property
    def source(self) -> str:
        """Which source counts traffic other than TCP's: "bpf", "capture" or "counters"."""
        return self._other.name if self._other is not None else SOURCE_COUNTERS

    # --- the consumers' side --------------------------------------------------

    def collect(self) -> TrafficSample:
        """One sample: the bytes moved since the previous ``collect`` (or since
        the sampler was made)."""
        with self._lock:
            self._latest = self._collect()
            return self._latest

    def latest(self, max_age: float) -> TrafficSample:
        """The last sample if it ended less than ``max_age`` seconds ago, else a new
        one; concurrent callers wait for one collection rather than make several."""
        with self._lock:
            if self._latest is not None and time.monotonic() - self._last_time < max_age:
                return self._latest
            self._latest = self._collect()
            return self._latest

    def totals(self) -> list[TrafficTotals]:
        """Monotonic totals since the sampler started (updated by each collection)."""
        with self._lock:
            return [dataclasses.replace(t) for t in self._totals.values()]

    @property
    def namespaces(self) -> list[str]:
        """The names of the namespaces being sampled now."""
        with self._lock:
            return [ns.ref.name for ns in self._namespaces.values()]

    def set_filter(self, filter: str | Sequence[str] | None) -> None:
        """Count only sockets matching this ss filter expression from the next
        sample on (None or blank: every socket); a UsageError leaves the old one."""
        parsed = filter_arg(filter)
        with self._lock:
            self._filter = parsed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for ns in self._namespaces.values():
                ns.tcp.close()
            self._namespaces.clear()
            if self._other is not None:
                self._other.close()
            self._tracked.clear()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- namespaces -------------------------------------------------------------

    def _wanted_refs(self) -> list[linux.NetnsRef]:
        """The namespaces named; else, with --pid/--user/--command, the namespaces
        those processes are in now; else every namespace on the host."""
        if self._named is not None:
            return [ref for ref in self._named if processes.still_there(ref)]
        if self._scan_filter is not None:
            return linux.processes_netns(processes.matching_pids(self._scan_filter))
        return namespace_refs(None, True, [])

    def _refresh_namespaces(self, baseline: bool = False) -> list[_Namespace]:
        """The namespaces to sample: sources opened for those that appeared, and
        those that disappeared (drained once more, then closed by ``_collect``).

        With ``baseline`` (when the sampler starts) each namespace's sockets now
        are the baseline; a namespace that appears later is new, and everything
        its sockets moved is counted -- unless it was chosen by --pid/--user/
        --command: then it may be old (a process selected moved into it, or one
        started in it), and it too counts from now.
        """
        baseline = baseline or (self._named is None and self._scan_filter is not None)
        refs = self._wanted_refs()
        wanted = {ref.inode for ref in refs}
        out = [self._namespaces.pop(i) for i in [i for i in self._namespaces if i not in wanted]]
        if self._named is not None:
            self._gone += [ns.ref.name for ns in out]
        fresh: list[_Namespace] = []
        for ref in refs:
            ns = self._namespaces.get(ref.inode)
            if ns is None:
                try:
                    tcp = NamespaceTcp(ref)
                except (OSError, linux.NetnsGone):
                    continue  # the namespace went away while we looked
                ns = self._namespaces[ref.inode] = _Namespace(ref, tcp)
                fresh.append(ns)
            out.append(ns)
        if baseline and fresh:
            self._baseline(fresh)
        return out

    def _baseline(self, fresh: list[_Namespace]) -> None:
        """Remember every socket's counters now: only what moves later is counted."""
        readings: list[tuple[_Namespace, TcpReading]] = []
        for ns in fresh:
            readings += [(ns, r) for r in ns.tcp.dump() if r.state != "LISTEN"]
            ns.tcp.closed()  # closes before this dump concern bytes from before it
        holders = self._holders((r.inode for _, r in readings), fresh)
        for ns, r in readings:
            self._tracked[r.cookie] = _Tracked(ns.ref.inode, r.tx, r.rx, r.retrans,
                                               holders.get(r.inode))

    # --- one collection ---------------------------------------------------------------

    def _collect(self) -> TrafficSample:
        if self._closed:
            raise ValueError("sampler is closed")
        if self._named is not None and not self._namespaces:
            gone = ", ".join(self._gone or [ref.name for ref in self._named])
            raise linux.NetnsGone(f"network namespace {gone} has gone")
        now = time.monotonic()
        interval = max(now - self._last_time, 1e-9)
        self._last_time = now
        notes: list[str] = []
        deltas: list[_Delta] = []
        live: list[tuple[linux.NetnsRef, TcpReading]] = []
        listeners: dict[tuple[int, int], list[TcpReading]] = {}
        present: set[int] = set()
        for ns in self._refresh_namespaces():
            closed = ns.tcp.closed()
            readings = [] if ns.ref.inode not in self._namespaces else ns.tcp.dump()
            if ns.tcp.lost_closes:
                ns.tcp.lost_closes = False
                notes.append(f"close messages were lost in {ns.ref.name} (kernel queue full): "
                             "bytes of connections that closed may be missing")
            if ns.ref.inode not in self._namespaces:
                ns.tcp.close()
                if self._named is not None:
                    notes.append(f"network namespace {ns.ref.name} has gone")
            for r in closed:
                deltas.append(self._closed_delta(ns.ref, r))
            for r in readings:
                if r.state == "LISTEN":
                    listeners.setdefault((ns.ref.inode, r.local_port), []).append(r)
                else:
                    live.append((ns.ref, r))
                    present.add(r.cookie)
        assert self._other is not None  # set by __init__ (close() fails collect before this)
        captured = self._other.sockets({inode: ns.tcp for inode, ns in self._namespaces.items()}, notes)
        # One owner scan for the connections, the listeners (connections that closed
        # unseen are credited to their listener's holder) and captured UDP's sockets.
        holders = self._holders(itertools.chain((r.inode for _, r in live),
                                                (r.inode for g in listeners.values() for r in g),
                                                self._other.inodes(captured)),
                                list(self._namespaces.values()))
        for delta in deltas:
            if delta.holder is None:
                group = listeners.get((delta.netns.inode, delta.reading.local_port))
                if group:
                    delta.holder = holders.get(group[0].inode)
        for ref, r in live:
            deltas.append(self._live_delta(ref, r, holders.get(r.inode)))
        self._forget_missing(present)
        sample = self._rows(deltas, live, holders, interval, notes, captured)
        update_totals(self._totals, sample, now, self._per_pid, self._forget_after)
        alive = {h.owner.pid for h in holders.values()}
        self._cgroups = {pid: v for pid, v in self._cgroups.items() if pid in alive}
        return sample

    def _closed_delta(self, ref: linux.NetnsRef, r: TcpReading) -> _Delta:
        tracked = self._tracked.pop(r.cookie, None)
        if tracked is None:  # opened and closed since the last dump
            return _Delta(r, ref, r.tx, r.rx, r.retrans, None, True)
        return _Delta(r, ref, max(r.tx - tracked.tx, 0), max(r.rx - tracked.rx, 0),
                      max(r.retrans - tracked.retrans, 0), tracked.holder, True)

    def _live_delta(self, ref: linux.NetnsRef, r: TcpReading, holder: _Holder | None) -> _Delta:
        tracked = self._tracked.get(r.cookie)
        if tracked is None:  # new since the last dump: everything it moved is new
            tracked = self._tracked[r.cookie] = _Tracked(ref.inode, 0, 0, 0, holder)
        delta = _Delta(r, ref, max(r.tx - tracked.tx, 0), max(r.rx - tracked.rx, 0),
                       max(r.retrans - tracked.retrans, 0), holder or tracked.holder, False)
        tracked.tx, tracked.rx, tracked.retrans, tracked.missing = r.tx, r.rx, r.retrans, 0
        if holder is not None:
            tracked.holder = holder  # an orphaned socket keeps its last holder
        return delta

    def _forget_missing(self, present: set[int]) -> None:
        """A socket gone from the dump is kept until its destroy message comes: it
        may be on its way, or the socket is reset (CLOSE, left out of the dumps)
        and its process has not closed it yet; its final counters are then
        compared with the last seen. Only a socket whose message must have been
        lost (kernel queue overflow) is forgotten, after ``_MISSING_ROUNDS``."""
        for cookie in [c for c in self._tracked if c not in present]:
            tracked = self._tracked[cookie]
            tracked.missing += 1
            if tracked.missing > _MISSING_ROUNDS or tracked.netns not in self._namespaces:
                del self._tracked[cookie]

    def _holders(self, inodes: Iterable[int], namespaces: list[_Namespace]) -> dict[int, _Holder]:
        """Who holds each of these sockets (of ``namespaces``)."""
        wanted = {i for i in inodes if i}
        if not wanted:
            return {}
        keep = self._scan_filter
        if keep is not None and keep.pids is not None:
            return _holders_of(scan_owners(wanted, keep, keep.pids))
        if self._named is None:
            return _holders_of(scan_owners(wanted, keep))
        # -N: a socket is nearly always held by a process in its own namespace;
        # those processes are read first, the others only for sockets not found.
        inside, outside = processes.split_by_netns(all_pids(), {ns.ref.inode for ns in namespaces})
        out = _holders_of(scan_owners(wanted, keep, inside))
        missing = wanted - out.keys()
        if missing:
            out.update(_holders_of(scan_owners(missing, keep, outside)))
        return out

    # --- rows -------------------------------------------------------------------------

    def _rows(self, deltas: list[_Delta], live: list[tuple[linux.NetnsRef, TcpReading]],
              holders: dict[int, _Holder], interval: float, notes: list[str],
              captured: Captured) -> TrafficSample:
        flt = self._filter
        rows = Rows(self._keep, self._cgroup)
        for ref, r in live:
            if flt is not None and not flt.match(_as_socket(ref, r)):
                continue
            holder = holders.get(r.inode) or _tracked_holder(self._tracked.get(r.cookie))
            row = rows.process(holder.owner if holder is not None else None, ref.name)
            if row is not None:
                row.connections += 1
            if r.remote_port:
                rows.remote(ref.name, r.remote).connections += 1
        for d in deltas:
            if not (d.tx or d.rx or d.retrans):
                continue
            r = d.reading
            if flt is not None and not flt.match(_as_socket(d.netns, r)):
                continue
            owner = d.holder.owner if d.holder is not None else None
            row = rows.process(owner, d.netns.name)
            if row is None:
                continue
            rows.add_bytes(row, "tcp", d.tx, d.rx)
            row.tcp_retransmitted_segments += d.retrans
            rows.connections.append(ConnectionTraffic(
                d.netns.name, "tcp", r.family, r.local, r.local_port, r.remote, r.remote_port,
                "CLOSED" if d.closed else r.state, r.cookie,
                owner.pid if owner is not None else None, owner.command if owner is not None else None,
                d.holder.holders if d.holder is not None else 0,
                d.tx, d.rx, d.tx / interval, d.rx / interval, d.closed))
            remote = rows.remote(d.netns.name, r.remote)
            remote.tx_bytes += d.tx
            remote.rx_bytes += d.rx
        alive = {h.owner.pid for h in holders.values()}
        if self._other is not None:
            names = {inode: ns.ref.name for inode, ns in self._namespaces.items()}
            alive |= self._other.add_rows(rows, captured, lambda inode: _owner(holders.get(inode)),
                                          names, self._filter, interval)
            if self._other.note:
                notes.append(self._other.note)
        return rows.finish(interval, alive, self.source, notes)

    def _cgroup(self, pid: int) -> tuple[str | None, str | None]:
        found = self._cgroups.get(pid)
        if found is None:
            found = self._cgroups[pid] = cgroups.process_cgroup(pid)
        return found



def _holders_of(omap: OwnerMap) -> dict[int, _Holder]:
    """inode -> who its bytes are credited to, and how many processes hold it."""
    out: dict[int, _Holder] = {}
    for inode, owners in omap.by_inode.items():
        if len(owners) == 1:
            out[inode] = _Holder(owners[0], 1)
            continue
        pids = {o.pid for o in owners}  # one process may hold it through several fds
        out[inode] = _Holder(max(owners, key=processes.start_time) if len(pids) > 1 else owners[0],
                             len(pids))
    return out


def _owner(holder: _Holder | None) -> Owner | None:
    return holder.owner if holder is not None else None


def _tracked_holder(tracked: _Tracked | None) -> _Holder | None:
    return tracked.holder if tracked is not None else None


def _as_socket(ref: linux.NetnsRef, r: TcpReading) -> Socket:
    """The reading as an inventory Socket, for the ss filter."""
    remote = InetAddress(r.remote, r.remote_port) if r.remote_port else None
    return Socket(ref.name, r.family, "tcp", "stream", r.state, InetAddress(r.local, r.local_port),
                  remote, 0, 0, r.inode, r.uid, r.cookie)
