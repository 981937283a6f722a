"""Live socket events for TCP and UDP: new, state change, closed.

Two sources, because neither is enough alone:

- The kernel's sock_diag destroy multicast groups (what ``ss -E`` listens to)
  deliver an inet_diag_msg for every TCP/UDP socket it frees, so a socket that
  lives shorter than one poll is still reported closed.
- A dump every ``interval`` seconds finds new sockets and state changes, which
  the kernel announces nowhere. A socket that leaves the dump without a destroy
  message (the message was dropped, or a reset connection is still held open by
  its process) is reported closed by the poll.

Sockets are told apart by their cookie: destroy messages carry no inode or
uid, and inodes go to 0 once a socket is orphaned. What a closing TCP
connection looks like: polls report the states they catch (ESTABLISHED ->
CLOSE_WAIT, say), and "closed" comes when the destroy message does, which is
when the application's socket is freed. The TIME_WAIT remnant the kernel keeps
for another minute is shown only as a state change of a connection already
being watched; it is never reported as new or closed on its own.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NetlinkError, iter_messages, parse_attrs
from sockscope.netlink.socket import NETLINK_SOCK_DIAG, NetlinkSocket
from sockscope.platform import linux

from .model import ALL_STATES_MASK, STATE_NAMES, InetAddress, Socket
from .owners import scan_owners
from .query import filter_arg

if TYPE_CHECKING:
    from .filter import SocketFilter

log = logging.getLogger("sockscope.watch")

SOL_NETLINK: Final = 270
NETLINK_ADD_MEMBERSHIP: Final = 1
# enum sknetlink_groups (include/uapi/linux/sock_diag.h)
DESTROY_GROUPS: Final = {
    ("tcp", "inet"): 1, ("udp", "inet"): 2, ("tcp", "inet6"): 3, ("udp", "inet6"): 4,
}
_FAMILIES: Final = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
_PROTO_BY_NUMBER: Final = {sockdiag.IPPROTO_TCP: "tcp", sockdiag.IPPROTO_UDP: "udp"}
# Receives per wake-up before the next poll gets its turn, so that a storm of
# closes cannot starve new-socket detection.
_DRAIN_MAX: Final = 4096
MAX_INTERVAL: Final = 86400.0  # a day; cli/argtypes.py refuses the same
# Cookies of sockets the poll reported closed, kept so that their destroy
# message (which may come much later: a reset connection stays open until its
# process closes the descriptor) is not reported a second time. Cookies are
# never reused, so the only reason to forget is memory.
_GONE_MAX: Final = 1 << 16
# From inet_diag_msg (sockdiag.INET_MSG): state, cookie (two u32), inode.
_HEAD: Final = struct.Struct("=xB42xII16xI")


@dataclass(slots=True)
class SocketEvent:
    """One change: ``event`` is "new", "state" or "closed"; ``time`` is unix time.

    ``socket`` is the socket as this event saw it; for "closed" that is the
    last state a poll saw it in (or the kernel's final report, for a socket no
    poll caught). ``old_state`` is the state before a "state" event, else None.
    """

    time: float
    event: str
    socket: Socket
    old_state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "event": self.event, "old_state": self.old_state,
                "socket": self.socket.to_dict()}


def watch(
    filter: str | Sequence[str] | None = None,  # named as in ss (and inventory.query)
    *,
    netns: str | None = None,
    interval: float = 0.25,
    owners: bool = True,
    proto: str | Sequence[str] = ("tcp", "udp"),
    family: str | Sequence[str] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> Generator[SocketEvent, None, None]:
    """Stream socket events until the caller stops (``close()`` the generator).

    ``filter``: an ss filter expression, applied to every event's socket (a
    state change is shown if the socket matches before or after it).
    ``netns``: a namespace name, path or pid. ``interval``: seconds between
    dumps. ``owners``: look up the processes holding each socket when it is
    first reported; a closed socket keeps those. ``on_note``: called with
    messages for the user (events lost to an overflowing kernel queue...);
    the default logs them as warnings.

    Everything is set up before this returns (errors raise here, not at the
    first ``next``), so sockets opened after the call are reported.
    """
    protos = (proto,) if isinstance(proto, str) else tuple(proto)
    for p in protos:
        if p not in ("tcp", "udp"):
            raise UsageError(f"cannot watch {p} sockets: the kernel announces closes for tcp and udp")
    families = ("inet", "inet6") if family is None else (
        (family,) if isinstance(family, str) else tuple(family))
    for f in families:
        if f not in _FAMILIES:
            raise UsageError(f"unknown family {f!r} (expected inet or inet6)")
    if not 0 < interval <= MAX_INTERVAL:  # also refuses nan; inf would overflow the timers
        raise UsageError(f"the poll interval must be positive and at most {MAX_INTERVAL:g} seconds")
    flt = filter_arg(filter)
    ref = linux.resolve_netns(netns) if netns is not None else None
    watcher = _Watcher([(p, f) for p in protos for f in families], ref, flt, interval, owners,
                       on_note or log.warning)
    events = watcher.run()
    next(events)  # runs the setup, up to the first yield
    # After that first None, the generator yields only events.
    return cast(Generator[SocketEvent, None, None], events)


@dataclass(slots=True)
class _Tracked:
    sock: Socket  # the latest snapshot, owners carried over from the first lookup
    looked_up: int = -1  # the inode whose owners were looked up; -1: never


class _Watcher:
    def __init__(self, kinds: list[tuple[str, str]], ref: linux.NetnsRef | None,
                 flt: SocketFilter | None, interval: float, owners: bool,
                 note: Callable[[str], None]) -> None:
        self.kinds = kinds
        self.ref = ref
        self.netns_name = ref.name if ref is not None else linux.current_netns().name
        self.filter = flt
        self.interval = interval
        self.owners = owners
        self.note = note
        self.tracked: dict[int, _Tracked] = {}
        self.gone: dict[int, None] = {}  # insertion-ordered set; see _GONE_MAX
        # Untracked remnants (see _remnant), cookie -> state: skipped by the
        # dump's fast path until their state changes (a fastopen child, say).
        self.remnants: dict[int, str] = {}
        self.denied_noted = False

    def run(self) -> Generator[SocketEvent | None, None, None]:
        mcast: NetlinkSocket | None = None
        dumper: NetlinkSocket | None = None
        sel = selectors.DefaultSelector()
        try:
            # Join before the first dump: a socket closing in between is then
            # either in the baseline or announced, never lost.
            with linux.in_netns(self.ref):
                mcast = self._join()
                dumper = NetlinkSocket(NETLINK_SOCK_DIAG)
            self._baseline(dumper)
            sel.register(mcast.fileno(), selectors.EVENT_READ)
            yield None
            deadline = time.monotonic() + self.interval
            while True:
                if sel.select(max(0.0, deadline - time.monotonic())):
                    yield from self._drain(mcast)
                if time.monotonic() >= deadline:
                    # Closes already queued first, so the poll does not infer them.
                    yield from self._drain(mcast)
                    # Counted from the poll's start: --interval is the period,
                    # whatever a poll costs on a busy host.
                    deadline = time.monotonic() + self.interval
                    yield from self._poll(dumper)
        finally:
            sel.close()
            for nl in (mcast, dumper):
                if nl is not None:
                    nl.close()

    # --- setup --------------------------------------------------------------

    def _join(self) -> NetlinkSocket:
        nl = NetlinkSocket(NETLINK_SOCK_DIAG)
        try:
            for kind in self.kinds:
                nl.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, DESTROY_GROUPS[kind])
            nl.sock.setblocking(False)
        except OSError as exc:
            nl.close()
            if exc.errno in (errno.EPERM, errno.EACCES):
                raise PermissionNeeded(
                    "watching sockets close needs root (sock_diag destroy groups)") from None
            raise SockscopeError(
                f"this kernel does not announce socket closes ({exc.strerror}; needs Linux 4.9+)"
            ) from None
        return nl

    def _baseline(self, dumper: NetlinkSocket) -> None:
        """What is open now: not reported, but known, so its closes and changes are."""
        report: list[_Tracked] = []
        changed, _ = self._dump(dumper)
        for sock in changed:
            if sock.cookie is None:
                continue
            if _remnant(sock):
                self.remnants[sock.cookie] = sock.state
                continue
            entry = self.tracked[sock.cookie] = _Tracked(sock)
            if self._match(sock):
                report.append(entry)
        # Owners now, while the processes still hold them: a close reports them.
        self._lookup_owners(report)

    # --- the two sources ----------------------------------------------------

    def _drain(self, mcast: NetlinkSocket) -> list[SocketEvent]:
        payloads: list[memoryview] = []
        overflowed = False
        for _ in range(_DRAIN_MAX):
            try:
                buf = mcast.recv_messages()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                overflowed = True  # the kernel dropped messages; the socket still works
                continue
            payloads.extend(m.payload for m in iter_messages(buf)
                            if m.type == sockdiag.SOCK_DIAG_BY_FAMILY
                            and len(m.payload) >= sockdiag.INET_MSG.size)
        if overflowed:
            self.note("close events were lost (the kernel's queue overflowed); closes of "
                      "sockets seen by a poll will still be reported, at the next poll")
        if not payloads:
            return []
        now = time.time()
        with linux.in_netns(self.ref):  # bound-device names resolve in the watched namespace
            ifname = linux.ifname_lookup()
            parsers = {p: sockdiag.InetParser(self.netns_name, p, False, False, ifname)
                       for p in ("tcp", "udp")}
            closed = [s for s in (_parse_destroy(parsers, p) for p in payloads) if s is not None]
        events: list[SocketEvent] = []
        for sock in closed:
            cookie = sock.cookie
            if cookie is None or cookie in self.gone:
                continue  # the poll has already reported it
            entry = self.tracked.pop(cookie, None)
            if entry is None and _never_bound(sock):
                continue
            shown = entry.sock if entry is not None else sock
            if self._match(shown):
                events.append(SocketEvent(now, "closed", shown))
        return events

    def _poll(self, dumper: NetlinkSocket) -> list[SocketEvent]:
        changed, seen = self._dump(dumper)
        now = time.time()
        events: list[SocketEvent] = []
        lookup: list[_Tracked] = []
        for sock in changed:
            cookie = sock.cookie
            if cookie is None:
                continue
            entry = self.tracked.get(cookie)
            if entry is None:
                if _remnant(sock):
                    self.remnants[cookie] = sock.state
                    continue
                self.remnants.pop(cookie, None)
                self.gone.pop(cookie, None)  # back after a dump that missed it
                entry = self.tracked[cookie] = _Tracked(sock)
                if self._match(sock):
                    events.append(SocketEvent(now, "new", sock))
                    lookup.append(entry)
                continue
            prev = entry.sock
            sock.owners = prev.owners
            entry.sock = sock
            if prev.state != sock.state and (self._match(sock) or self._match(prev)):
                events.append(SocketEvent(now, "state", sock, prev.state))
                lookup.append(entry)
            elif entry.looked_up == 0 and sock.inode:
                # Reported while still in the accept queue (no file yet): now
                # that the process has accepted it, say who holds it.
                lookup.append(entry)
        for cookie in [c for c in self.tracked if c not in seen]:
            entry = self.tracked.pop(cookie)
            self._remember_gone(cookie)
            if self._match(entry.sock):
                events.append(SocketEvent(now, "closed", entry.sock))
        self.remnants = {c: state for c, state in self.remnants.items() if c in seen}
        self._lookup_owners(lookup)
        return events

    # --- helpers ------------------------------------------------------------

    def _dump(self, dumper: NetlinkSocket) -> tuple[list[Socket], set[int]]:
        """One dump: the sockets that are new or changed (state or inode) since
        the last, fully parsed, and the cookies of every socket in it.

        Building a Socket is most of a dump's cost (80 ms for 20,000), and at
        four polls a second that would be a third of a core for a watch that
        usually finds nothing; unchanged sockets cost one unpack instead.
        Every state is asked for, whatever the filter: a socket leaving the dump
        because its state left the filter's set would look closed.
        """
        changed: list[Socket] = []
        seen: set[int] = set()
        tracked, remnants, names = self.tracked, self.remnants, STATE_NAMES
        unpack = _HEAD.unpack_from
        with linux.in_netns(self.ref):  # bound-device names resolve in the watched namespace
            ifname = linux.ifname_lookup()
            for proto, fam in self.kinds:
                parser = sockdiag.InetParser(self.netns_name, proto, False, False, ifname)
                req = sockdiag.inet_request(_FAMILIES[fam], proto, ALL_STATES_MASK)
                try:
                    for batch in dumper.dump_payloads(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                        todo: list[memoryview] = []
                        for payload in batch:
                            state, cookie_lo, cookie_hi, inode = unpack(payload)
                            cookie = cookie_lo | (cookie_hi << 32)
                            seen.add(cookie)
                            entry = tracked.get(cookie)
                            if entry is None:
                                if names.get(state) != remnants.get(cookie):
                                    todo.append(payload)
                            elif names.get(state) != entry.sock.state or inode != entry.sock.inode:
                                todo.append(payload)
                        changed.extend(parser.parse_all(todo))
                except NetlinkError as exc:
                    raise SockscopeError(
                        f"sock_diag cannot dump {proto} sockets here ({exc.strerror}); "
                        f"is the {proto}_diag module available?") from None
        return changed, seen

    def _match(self, sock: Socket) -> bool:
        return self.filter is None or self.filter.match(sock)

    def _lookup_owners(self, entries: list[_Tracked]) -> None:
        """One /proc scan for every socket about to be reported that has a file."""
        todo = [e for e in entries if e.looked_up != e.sock.inode]
        for e in todo:
            e.looked_up = e.sock.inode
        wanted = {e.sock.inode for e in todo if e.sock.inode}
        if not self.owners or not wanted:
            return
        omap = scan_owners(wanted)
        for e in todo:
            holders = omap.by_inode.get(e.sock.inode)
            if holders:
                e.sock.owners = holders
        if omap.denied and os.geteuid() != 0 and not self.denied_noted:
            self.denied_noted = True
            self.note("owners of other users' sockets need root")

    def _remember_gone(self, cookie: int) -> None:
        self.gone[cookie] = None
        if len(self.gone) > _GONE_MAX:
            del self.gone[next(iter(self.gone))]


def _parse_destroy(parsers: dict[str, sockdiag.InetParser], payload: memoryview) -> Socket | None:
    attr = parse_attrs(payload, sockdiag.INET_MSG.size).get(sockdiag.INET_DIAG_PROTOCOL)
    proto = _PROTO_BY_NUMBER.get(attr[0]) if attr is not None and len(attr) else None
    if proto is None:
        return None  # no protocol attribute: cannot tell which parser reads it
    sock = parsers[proto].parse(payload)
    sock.uid = None  # destroy messages leave it 0, which would read as root
    return sock


def _remnant(sock: Socket) -> bool:
    """Kernel-side leftovers with no application socket of their own: timewait
    sockets (TIME_WAIT, or FIN_WAIT2 after an orphaned close; the connection is
    over) and half-open requests (SYN_RECV without a file, reported once the
    handshake completes, as the connection they become)."""
    return sock.timer == "timewait" or (sock.state == "SYN_RECV" and not sock.inode)


def _never_bound(sock: Socket) -> bool:
    """A socket closed without ever having a port (socket() then close(), or a
    bind that failed): no dump could have shown it, and it says nothing useful."""
    local = sock.local
    return sock.remote is None and (not isinstance(local, InetAddress) or local.port == 0)
