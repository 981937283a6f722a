"""One collection: everything a scrape exports, gathered once.

``collect`` makes one inventory pass over every namespace watched (socket counts,
listeners, orphans), finds the listeners' processes (``listeners.py``: a /proc
walk only when they changed), reads the kernel's counters in each of those
namespaces, the host's socket memory, optionally the interfaces, and the
per-process traffic totals; every metric family of a scrape is built from the
``Snapshot`` it returns. A part that fails (a namespace gone mid-scrape, a
process gone mid-scan, no permission) is recorded in ``errors`` and the other
parts are still exported.

``SharedCollection`` hands one snapshot to every scrape that arrives while it is
being made, and keeps it ``min_interval`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sockscope.errors import SockscopeError
from sockscope.inventory.model import InetAddress
from sockscope.inventory.query import Query
from sockscope.platform import linux

from . import kernel
from .fold import Folding, ProcessRow, ProcessTotals
from .listeners import ListenerOwners

if TYPE_CHECKING:
    from sockscope.inventory.interfaces import Interface
    from sockscope.inventory.model import Socket

# TCP states of a socket its process has let go of, still finishing its close.
_ORPHAN_STATES = frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "LAST_ACK"})

SocketKey = tuple[str, str, str, str]  # netns, proto, family, state


class TrafficSource(Protocol):
    """What the exporter needs of a ``sockscope.traffic.Sampler``."""

    def latest(self, max_age: float) -> object: ...
    def totals(self) -> Sequence[ProcessTotals]: ...


@dataclass(slots=True)
class Listener:
    """A TCP listening address in one namespace; several sockets share it with
    SO_REUSEPORT, and their queues and backlogs add up."""

    netns: str
    proto: str
    address: str
    port: int
    commands: set[str] = field(default_factory=set)  # who holds it; empty: not known
    queue_length: int = 0  # connections waiting for accept()
    backlog: int = 0  # the most that may wait (listen()'s backlog, capped by somaxconn)
    inodes: list[int] = field(default_factory=list)  # its sockets


@dataclass(slots=True)
class Snapshot:
    """What one collection found; ``errors`` names the parts that failed."""

    taken: float  # time.monotonic() at the end
    duration: float  # seconds the collection took
    sockets: dict[SocketKey, int] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    orphans: dict[str, int] = field(default_factory=dict)  # netns -> orphaned TCP sockets
    namespaces: dict[str, kernel.NamespaceCounters] = field(default_factory=dict)
    memory: kernel.HostMemory | None = None
    interfaces: list[Interface] = field(default_factory=list)
    processes: list[ProcessRow] = field(default_factory=list)  # folded (see fold.py)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CollectOptions:
    """``netns``: the namespaces to watch (names, paths or pids); None: every one on
    the host. ``interfaces``: interface counters too."""

    netns: Sequence[str] | None = None
    interfaces: bool = False


def collect(options: CollectOptions, traffic: TrafficSource | None = None,
            folding: Folding | None = None, owners: ListenerOwners | None = None,
            max_age: float = 0.0) -> Snapshot:
    """One collection (see the module's docstring). ``traffic``'s totals become
    ``processes`` through ``folding``; ``owners`` keeps the listeners' holders
    between collections. Both keep state: one collection at a time, as
    ``SharedCollection`` runs them."""
    started = time.monotonic()
    snap = Snapshot(started, 0.0)
    refs = _watched_namespaces(options.netns, snap.errors)
    _inventory(options.netns, snap)
    try:
        _listener_commands(snap.listeners, owners or ListenerOwners(0.0))
    except OSError:
        snap.errors.append("inventory")
    for ref in refs:
        try:
            with linux.in_netns(ref):
                snap.namespaces[ref.name] = kernel.read_namespace()
        except linux.NetnsGone:
            continue  # deleted since it was listed: nothing to count there any more
        except (OSError, SockscopeError):
            snap.errors.append("kernel")
    try:
        snap.memory = kernel.read_host_memory()
    except OSError:
        snap.errors.append("kernel")
    if options.interfaces:
        _interfaces(refs, snap)
    if traffic is not None:
        try:
            traffic.latest(max_age)
            totals = traffic.totals()
            snap.processes = folding.fold(totals) if folding is not None else [
                ProcessRow.of(t) for t in totals]
        except SockscopeError:
            snap.errors.append("traffic")
    snap.taken = time.monotonic()
    snap.duration = snap.taken - started
    return snap


def _watched_namespaces(specs: Sequence[str] | None, errors: list[str]) -> list[linux.NetnsRef]:
    if specs is None:
        return linux.all_netns()
    refs: dict[int, linux.NetnsRef] = {}
    for spec in specs:
        try:
            ref = linux.resolve_netns(spec)
        except SockscopeError:
            errors.append("netns")  # a namespace named on the command line has gone
            continue
        refs.setdefault(ref.inode, ref)
    return list(refs.values())


def _inventory(specs: Sequence[str] | None, snap: Snapshot) -> None:
    """Counts, listeners and orphans from one inventory pass (streamed: memory
    does not grow with the number of sockets). Owners are not looked up here:
    only the listeners' are wanted (``ListenerOwners``)."""
    for _attempt in range(3):
        try:
            if specs is None:
                # The inventory lists every namespace itself and skips one deleted
                # between its listing and its visit.
                query = Query(all_netns=True, owners=False)
            else:
                refs = _watched_namespaces(specs, [])
                if not refs:
                    return
                query = Query(netns=[ref.path for ref in refs], owners=False)
            with query.listing() as listing:
                counts, listeners, orphans = _count(listing)
        except linux.NetnsGone:
            continue  # one named on the command line went away midway: again without it
        except SockscopeError:
            break
        snap.sockets, snap.listeners, snap.orphans = counts, list(listeners.values()), orphans
        return
    snap.errors.append("inventory")


def _count(found: Iterable[Socket]) -> tuple[dict[SocketKey, int],
                                             dict[tuple[str, str, int], Listener], dict[str, int]]:
    counts: dict[SocketKey, int] = {}
    listeners: dict[tuple[str, str, int], Listener] = {}
    orphans: dict[str, int] = {}
    for s in found:
        key = (s.netns, s.proto, s.family, s.state)
        counts[key] = counts.get(key, 0) + 1
        if s.proto != "tcp":
            continue
        if s.state == "LISTEN":
            _add_listener(listeners, s)
        elif s.inode == 0 and s.state in _ORPHAN_STATES:
            orphans[s.netns] = orphans.get(s.netns, 0) + 1
    return counts, listeners, orphans


def _add_listener(listeners: dict[tuple[str, str, int], Listener], s: Socket) -> None:
    local = s.local
    if not isinstance(local, InetAddress):
        return
    key = (s.netns, local.address, local.port)
    row = listeners.get(key)
    if row is None:
        row = listeners[key] = Listener(s.netns, s.proto, local.address, local.port)
    row.queue_length += s.recv_q
    row.backlog += s.send_q
    if s.inode:
        row.inodes.append(s.inode)


def _listener_commands(listeners: list[Listener], owners: ListenerOwners) -> None:
    found = owners.commands({inode for lst in listeners for inode in lst.inodes})
    for lst in listeners:
        for inode in lst.inodes:
            lst.commands.update(found.get(inode, ()))


def _interfaces(refs: list[linux.NetnsRef], snap: Snapshot) -> None:
    from sockscope.inventory.interfaces import interfaces

    for ref in refs:
        try:
            found = interfaces(ref.path)
        except linux.NetnsGone:
            continue
        except (OSError, SockscopeError):
            snap.errors.append("interfaces")
            continue
        for iface in found:
            iface.netns = ref.name
        snap.interfaces.extend(found)


class SharedCollection:
    """One collection for every scrape that asks while it runs, and the last one
    for ``min_interval`` seconds after it ended.

    ``make`` builds a snapshot (it is called with the age a traffic sample may
    have); ``after`` runs on each new one while still under the lock (the
    cardinality folding keeps state across collections).
    """

    def __init__(self, make: Callable[[float], Snapshot], min_interval: float = 0.0,
                 after: Callable[[Snapshot], None] | None = None) -> None:
        self._make = make
        self.after = after
        self.min_interval = min_interval
        self._cond = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._running = False
        self._generation = 0
        self._failure: BaseException | None = None
        self.collections = 0  # how many were made (the exporter exports it)

    def get(self) -> Snapshot:
        with self._cond:
            snap = self._snapshot
            if snap is not None and time.monotonic() - snap.taken < self.min_interval:
                return snap
            if self._running:
                generation = self._generation
                while self._generation == generation:
                    self._cond.wait()
                if self._failure is not None:
                    raise self._failure
                assert self._snapshot is not None
                return self._snapshot
            self._running = True
        failure: BaseException | None = None
        snap = None
        try:
            snap = self._make(self.min_interval)
            if self.after is not None:
                self.after(snap)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            with self._cond:
                self._running = False
                self._generation += 1
                self._failure = failure
                if snap is not None:
                    self._snapshot = snap
                    self.collections += 1
                self._cond.notify_all()
        return snap
