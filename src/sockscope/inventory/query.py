"""The inventory API: ``sockets()``, ``iter_sockets()``, and ``start()`` for the CLI.

For each network namespace asked for: enter it, open one sock_diag netlink
socket and read what only the namespace can tell (interface names), leave it,
then dump every kind of socket over that socket, parsing and filtering each
reply as it arrives (a kind whose diag module is missing is read from
/proc/net, back inside). Owners come from one scan of /proc for the whole host
(owners.py), in a packed map.

Two orders: ``iter_sockets()`` (and the CLI's streaming formats) builds the
owner map first, on two cores, then yields each socket with its owners as it
is parsed, so memory does not grow with the number of sockets beyond that
map. ``sockets()`` dumps while the owner scan runs beside it and attaches
owners to the finished list: the list is held anyway, and the overlap is faster.
"""

from __future__ import annotations

import errno
import gc
import itertools
import os
import socket
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, ParamSpec

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NetlinkError
from sockscope.netlink.socket import NETLINK_SOCK_DIAG, NetlinkSocket
from sockscope.platform import linux

from . import owners as owners_mod
from .model import ALL_STATES_MASK, STATE_NUMBERS, Socket

if TYPE_CHECKING:
    from .filter import SocketFilter
    from .unixnames import UnixNames

P = ParamSpec("P")

PROTOS = ("tcp", "udp", "raw", "icmp", "unix", "packet", "netlink")
INET_PROTOS = ("tcp", "udp", "raw", "icmp")
# Kinds no sock_diag handler covers: /proc/net is their source, not a fallback.
_PROCFS_ONLY = ("icmp",)
FAMILIES = ("inet", "inet6", "unix", "packet", "netlink")

# ss's -l: "listening" is every socket not connected, LISTEN and UNCONN (CLOSE),
# so that bound UDP, raw, packet and unix datagram sockets are listed too.
NOT_CONNECTED = (1 << STATE_NUMBERS["LISTEN"]) | (1 << STATE_NUMBERS["UNCONN"])

# Sockets parsed ahead, beside the owner scan, before a stream joins the scan: a
# bound on what a stream holds (~1.5 MiB), enough to cover a small listing.
READ_AHEAD = 2048

# Diag errors meaning "this kernel cannot dump that kind": fall back to /proc/net.
_MISSING = {errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EINVAL}


class NoDiagHandler(Exception):
    """The kernel has no sock_diag handler for a kind: read /proc/net instead."""


@dataclass(slots=True)
class Inventory:
    """What ``collect`` found, plus notes for the user (e.g. owners hidden without root)."""

    sockets: list[Socket]
    notes: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # kinds read from /proc/net


def filter_arg(filter: str | Sequence[str] | None) -> SocketFilter | None:
    """The parsed ss filter, or None when none (or only blanks) was given.

    The filter module loads only when there is something to parse.
    """
    if filter is None:
        return None
    words = _strings(filter, "filter", "an ss filter expression")
    if not " ".join(words).strip():
        return None
    from .filter import parse_filter

    return parse_filter(list(words))


def _items(value: object) -> tuple[object, ...]:
    """One value or an iterable of them, as a tuple (a string is one value)."""
    if isinstance(value, str | bytes):
        return (value,)
    try:
        return tuple(value)  # type: ignore[arg-type]
    except TypeError:
        return (value,)


def _strings(value: object, what: str, expected: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings: one string, or an iterable of them."""
    items = _items(value)
    strings = tuple(item for item in items if isinstance(item, str))
    if len(strings) != len(items):
        bad = next(item for item in items if not isinstance(item, str))
        raise UsageError(f"{what}: expected {expected}, got {bad!r}")
    return strings


def _as_tuple(value: str | Iterable[str] | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    if value is None:
        return tuple(allowed)
    items = _strings(value, what, f"one of {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            raise UsageError(f"unknown {what} {item!r} (expected one of: {', '.join(allowed)})")
    return items


class Query:
    """The arguments of one inventory call, checked; ``listing()`` runs it."""

    def __init__(
        self,
        proto: str | Iterable[str] | None = None,
        family: str | Iterable[str] | None = None,
        *,
        states: str | Iterable[str] | None = None,
        listening: bool | None = None,
        filter: str | Sequence[str] | None = None,
        netns: str | Sequence[str] | None = None,
        all_netns: bool = False,
        owners: bool = True,
        info: bool = False,
        memory: bool = False,
        extended: bool = False,
        check_paths: bool = False,
        pid: int | Iterable[int] | None = None,
        user: str | int | None = None,
        command: str | None = None,
        procfs: bool = False,
    ) -> None:
        """The arguments of ``sockets()`` (see there), checked: bad ones raise ``UsageError``."""
        self.protos = _as_tuple(proto, PROTOS, "protocol")
        self.families = _as_tuple(family, FAMILIES, "family")
        self.filter = filter_arg(filter)
        if self.filter is not None:
            extended = extended or self.filter.needs_extended  # fwmark/cgroup tests need them
        mask = ALL_STATES_MASK
        if states is not None:
            mask = 0
            for name in _strings(states, "states", "kernel state names"):
                num = STATE_NUMBERS.get(name.upper())
                if num is None:
                    raise UsageError(f"unknown state {name!r}")
                mask |= 1 << num
        if listening is True:
            mask &= NOT_CONNECTED
        elif listening is False:
            mask &= ~NOT_CONNECTED
        if self.filter is not None:
            mask &= self.filter.kernel_states
        self.mask = mask
        self.notes: list[str] = []  # what could not be seen, known before the dump
        self.refs = namespace_refs(netns, all_netns, self.notes)
        self.all_netns = all_netns
        self.owners = owners
        self.info, self.memory, self.extended = info, memory, extended
        self.check_paths = check_paths
        self.process_filter = process_filter(pid, user, command)
        self.procfs = procfs

    def listing(self, owners_first: bool = True, unix_peer_names: bool = False,
                warn: bool = False) -> Listing:
        """Run the query: an iterator over the sockets, one namespace after another.

        ``owners_first``: build the owner map before the first socket, so each
        comes with its owners; otherwise the scan runs beside the dump and
        ``Listing.owner_map()`` gives the map at the end. ``unix_peer_names``:
        learn the bound name of every unix socket first (``Listing.unix_names``),
        to name the other end of a connection. ``warn``: issue the notes as
        ``InventoryWarning``s at the end.
        """
        return Listing(self, owners_first, unix_peer_names, warn)


class Listing(Iterator[Socket]):
    """The sockets of a query as they are found; ``notes`` fill in as it goes.

    Iterate once. ``close()`` (or the end of a ``with`` block, or exhausting it)
    releases the netlink socket and stops the owner scan.
    """

    def __init__(self, query: Query, owners_first: bool, unix_peer_names: bool,
                 warn: bool = False) -> None:
        self.query = query
        self.notes: list[str] = list(query.notes)
        self.fallbacks: list[str] = []
        self.unix_names: UnixNames | None = None
        self._peer_names = unix_peer_names
        self._warn = warn
        self._omap: owners_mod.OwnerMap | None = None
        self._scan: owners_mod.BackgroundScan | None = None
        self._keep_owned = query.process_filter is not None
        self._ahead: deque[Socket] = deque()
        self._sockets = self._generate()
        try:
            if query.owners and query.process_filter is not None:
                # Which sockets to keep depends on the owners: the (cheaper) filtered scan first.
                self._set_map(owners_mod.scan_owners(process_filter=query.process_filter))
            elif query.owners:
                self._scan = owners_mod.BackgroundScan()
                if owners_first:
                    if len(query.refs) == 1:  # (unix_names belong to the namespace at hand)
                        # Parse the first sockets while the child scans, then join the scan:
                        # a small listing overlaps as sockets() does, a big one holds no more.
                        self._ahead.extend(itertools.islice(self._sockets, READ_AHEAD))
                    self.owner_map()
        except BaseException:
            self.close()
            raise
        self._attach = self._omap is not None

    def __next__(self) -> Socket:
        omap = self._omap if self._attach else None
        while True:
            s = self._ahead.popleft() if self._ahead else next(self._sockets)
            if omap is not None:
                attach_owners(s, omap)
                if self._keep_owned and not s.owners:
                    continue
            return s

    def __enter__(self) -> Listing:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._sockets.close()
        if self._scan is not None:
            scan, self._scan = self._scan, None
            scan.close()

    def __del__(self) -> None:
        # A listing dropped half-way without close(): its scan child is still reaped.
        if getattr(self, "_scan", None) is not None:
            self.close()

    def owner_map(self) -> owners_mod.OwnerMap | None:
        """The owner map (None without owners); waits for the scan to finish."""
        if self._scan is not None:
            scan, self._scan = self._scan, None
            try:
                self._set_map(scan.result())
            finally:
                scan.close()
        return self._omap

    def _set_map(self, omap: owners_mod.OwnerMap) -> None:
        self._omap = omap
        if omap.denied and os.geteuid() != 0:
            self.notes.append(
                f"owners of other users' sockets need root ({omap.denied} processes not readable)")
        elif omap.denied:
            self.notes.append(f"{omap.denied} processes could not be inspected")

    def _generate(self) -> Generator[Socket, None, None]:
        q = self.query
        skipped = 0
        for ref in q.refs:
            try:
                ns = _Namespace(ref, q, self._peer_names)
            except PermissionNeeded:
                if not q.all_netns:
                    raise
                skipped += 1  # --all-netns without root: show what can be seen
                continue
            except linux.NetnsGone:
                if not q.all_netns:
                    raise
                continue  # deleted since it was listed: it has no sockets to show any more
            try:
                self.unix_names = ns.unix_names
                yield from self._sockets_of(ns)
            except linux.NetnsGone:
                if not q.all_netns:
                    raise  # (a /proc/net fallback found it gone midway)
            finally:
                ns.close()
        if skipped:
            self.notes.append(f"{skipped} network namespaces need root to enter and were skipped")
        if self._warn:
            _warn(self.notes)

    def _sockets_of(self, ns: _Namespace) -> Iterator[Socket]:
        q = self.query
        match = q.filter.match if q.filter is not None else None
        check_paths = q.check_paths
        for kind, fam in _kinds(q.protos, q.families):
            for s in ns.sockets(kind, fam, self.fallbacks):
                if match is not None and not match(s):
                    continue
                if check_paths:
                    mark_path(s)
                yield s


def attach_owners(s: Socket, omap: owners_mod.OwnerMap) -> None:
    """Set ``owners`` (and, for unix sockets, ``peer_owners``) from the map."""
    if s.inode:
        s.owners = omap.holders(s.inode)
    if s.peer_inode:
        s.peer_owners = omap.holders(s.peer_inode)


class _Namespace:
    """One namespace's sources: a sock_diag socket opened inside it, its interface
    names, and the way back in for /proc/net tables."""

    def __init__(self, ref: linux.NetnsRef, query: Query, unix_peer_names: bool) -> None:
        self.ref, self.query = ref, query
        self.nl: NetlinkSocket | None = None
        self.own_inode = 0
        self.unix_names: UnixNames | None = None
        with linux.in_netns(ref):
            names = dict(socket.if_nameindex())
            if not query.procfs:
                try:
                    self.nl = NetlinkSocket(NETLINK_SOCK_DIAG)
                except OSError:
                    self.nl = None  # no sock_diag at all: every kind from /proc/net
        self.ifname: Callable[[int], str | None] = names.get
        if self.nl is not None:
            # Our own diag socket is not part of the host's inventory.
            self.own_inode = os.fstat(self.nl.fileno()).st_ino
        if unix_peer_names and "unix" in query.protos and "unix" in query.families:
            from .unixnames import UnixNames

            self.unix_names = UnixNames(self._named_unix())

    def close(self) -> None:
        if self.nl is not None:
            self.nl.close()
            self.nl = None

    def sockets(self, kind: str, fam: str, fallbacks: list[str]) -> Iterator[Socket]:
        q = self.query
        if kind in _PROCFS_ONLY or self.nl is None:
            yield from self._procfs(kind, fam)
            return
        try:
            for s in _dump_kind(self.nl, kind, fam, self.ref.name, q.mask, q.info, q.memory,
                                q.extended, q.check_paths, self.ifname):
                if s.inode != self.own_inode:
                    yield s
        except NoDiagHandler:
            fallbacks.append(f"{kind}{'6' if fam == 'inet6' else ''}")
            yield from self._procfs(kind, fam)

    def _named_unix(self) -> Iterator[Socket]:
        """Every unix socket of the namespace with only its name (a light dump)."""
        if self.nl is not None:
            try:
                for m in self.nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, sockdiag.unix_names_request()):
                    yield sockdiag.parse_unix(m.payload, self.ref.name)
                return
            except NetlinkError as exc:
                if exc.errno not in _MISSING:
                    raise SockscopeError(f"sock_diag dump of unix sockets failed: {exc.strerror}") from None
        yield from self._procfs("unix", "unix", ALL_STATES_MASK)

    def _procfs(self, kind: str, fam: str, mask: int | None = None) -> list[Socket]:
        """A /proc/net table, read whole from inside the namespace."""
        from . import procnet

        name = kind + ("6" if fam == "inet6" else "") if kind in INET_PROTOS else kind
        mask = self.query.mask if mask is None else mask
        with linux.in_netns(self.ref):
            found = procnet.read_sockets(name, self.ref.name)
        return [s for s in found if mask & (1 << STATE_NUMBERS.get(s.state, 0))]


def _kinds(protos: Sequence[str], families: Sequence[str]) -> list[tuple[str, str]]:
    kinds: list[tuple[str, str]] = []
    for p in protos:
        if p in INET_PROTOS:
            kinds.extend((p, f) for f in ("inet", "inet6") if f in families)
        elif p in families:
            kinds.append((p, p))
    return kinds


def _dump_kind(nl: NetlinkSocket, kind: str, fam: str, netns: str, mask: int, info: bool,
               memory: bool, extended: bool, want_vfs: bool,
               ifname: Callable[[int], str | None]) -> Iterator[Socket]:
    """One sock_diag dump, parsed as it arrives; NoDiagHandler when the kernel
    lacks the diag handler for it."""
    try:
        if kind in INET_PROTOS:
            family = socket.AF_INET if fam == "inet" else socket.AF_INET6
            ext = 0
            if info and kind == "tcp":
                ext |= sockdiag.EXT_INFO | sockdiag.EXT_CONG
            if memory:
                ext |= sockdiag.EXT_SKMEMINFO
            parser = sockdiag.InetParser(netns, kind, info, memory, ifname, extended)
            req = sockdiag.inet_request(family, kind, mask, ext)
            for batch in nl.dump_payloads(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                yield from parser.parse_all(batch)
        elif kind == "unix":
            req = sockdiag.unix_request(mask, want_vfs, memory)
            for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                yield sockdiag.parse_unix(m.payload, netns)
        elif kind == "packet":
            if not mask & (1 << STATE_NUMBERS["UNCONN"]):
                return  # packet sockets have no connection state: always UNCONN
            req = sockdiag.packet_request()
            for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                yield sockdiag.parse_packet(m.payload, netns, ifname, memory)
        else:
            req = sockdiag.netlink_request()
            for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                s = sockdiag.parse_netlink(m.payload, netns, memory)
                if mask & (1 << STATE_NUMBERS.get(s.state, 0)):
                    yield s
    except NetlinkError as exc:
        if exc.errno in _MISSING:
            raise NoDiagHandler(kind) from None
        raise SockscopeError(f"sock_diag dump of {kind} sockets failed: {exc.strerror}") from None


class PendingInventory:
    """Every socket of a listing, dumped while the owner scan runs, then given its
    owners; ``finish()`` returns them with the notes."""

    def __init__(self, listing: Listing) -> None:
        self._listing = listing
        # The list holds a few objects a socket and makes no reference cycles: the
        # cycle collector would only walk it again and again (a third of the time
        # at 200,000 sockets), so it is paused while the list is built.
        collecting = gc.isenabled()
        gc.disable()
        try:
            with listing:
                self.sockets = list(listing)
                omap = listing.owner_map()
            if omap is not None and not listing._attach:
                for s in self.sockets:
                    attach_owners(s, omap)
        finally:
            if collecting:
                gc.enable()

    def finish(self) -> Inventory:
        listing = self._listing
        return Inventory(self.sockets, listing.notes, sorted(set(listing.fallbacks)))


def _started(q: Callable[P, Query]) -> Callable[P, PendingInventory]:
    def start(*args: P.args, **kwargs: P.kwargs) -> PendingInventory:
        """``sockets()``'s arguments; the inventory with owners attached by ``finish()``."""
        return PendingInventory(q(*args, **kwargs).listing(owners_first=False))

    return start


# The CLI's and kill's entry: Query's arguments, typed through ParamSpec.
start = _started(Query)


class SocketList(list[Socket]):
    """What ``sockets()`` returns: a list of ``Socket``, plus ``notes`` saying what
    could not be seen (namespaces skipped without root, owners hidden...). Each
    note is also issued as an ``InventoryWarning``."""

    notes: list[str]

    def __init__(self, found: Iterable[Socket] = (), notes: Iterable[str] = ()) -> None:
        super().__init__(found)
        self.notes = list(notes)


def sockets(
    proto: str | Iterable[str] | None = None,
    family: str | Iterable[str] | None = None,
    *,
    states: str | Iterable[str] | None = None,
    listening: bool | None = None,
    filter: str | Sequence[str] | None = None,
    netns: str | Sequence[str] | None = None,
    all_netns: bool = False,
    owners: bool = True,
    info: bool = False,
    memory: bool = False,
    extended: bool = False,
    check_paths: bool = False,
    pid: int | Iterable[int] | None = None,
    user: str | int | None = None,
    command: str | None = None,
    procfs: bool = False,
) -> SocketList:
    """The socket inventory: every socket matching all the conditions given, with
    the processes holding it. Bad arguments raise ``UsageError``.

    ``proto``: tcp, udp, raw, icmp, unix, packet, netlink, or several (default: all).
    ``family``: inet, inet6, unix, packet, netlink (default: all).
    ``states``: kernel state names (ESTABLISHED, LISTEN, ...). ``listening``:
    True keeps the sockets that are not connected (LISTEN and UNCONN, ss's -l),
    False the connected ones. ``filter``: an ss filter expression.
    ``netns``: a namespace name, path or pid (or several); ``all_netns``: every
    namespace on the host (without root, those that cannot be entered are
    skipped, and the result's ``notes`` say so). ``owners``: look up the holding
    processes. ``info``: tcp_info; ``memory``: socket memory; ``extended``:
    cgroup id and mark; ``check_paths``: does each unix socket's file still exist.
    ``pid``/``user``/``command``: keep the sockets such processes hold.
    ``procfs``: read /proc/net instead of sock_diag.
    """
    inv = start(proto, family, states=states, listening=listening, filter=filter, netns=netns,
                all_netns=all_netns, owners=owners, info=info, memory=memory, extended=extended,
                check_paths=check_paths, pid=pid, user=user, command=command,
                procfs=procfs).finish()
    _warn(inv.notes)
    return SocketList(inv.sockets, inv.notes)


def iter_sockets(
    proto: str | Iterable[str] | None = None,
    family: str | Iterable[str] | None = None,
    *,
    states: str | Iterable[str] | None = None,
    listening: bool | None = None,
    filter: str | Sequence[str] | None = None,
    netns: str | Sequence[str] | None = None,
    all_netns: bool = False,
    owners: bool = True,
    info: bool = False,
    memory: bool = False,
    extended: bool = False,
    check_paths: bool = False,
    pid: int | Iterable[int] | None = None,
    user: str | int | None = None,
    command: str | None = None,
    procfs: bool = False,
) -> Listing:
    """Like ``sockets()`` (the same arguments), one socket at a time without
    building the list: memory does not grow with the number of sockets beyond
    the owner map (the owners of every socket on the host, about 30 bytes each),
    which is built first. Bad arguments raise ``UsageError`` at the call.

    The iterator has ``close()`` and is a context manager; closing it early
    stops the owner scan. Its ``notes`` fill in as it goes and are issued as
    ``InventoryWarning``s when it is exhausted.
    """
    query = Query(proto, family, states=states, listening=listening, filter=filter, netns=netns,
                  all_netns=all_netns, owners=owners, info=info, memory=memory, extended=extended,
                  check_paths=check_paths, pid=pid, user=user, command=command, procfs=procfs)
    return query.listing(owners_first=True, warn=True)


def _warn(notes: Iterable[str]) -> None:
    if notes:
        import warnings

        from .model import InventoryWarning

        for note in notes:
            warnings.warn(note, InventoryWarning, stacklevel=3)


def namespace_refs(netns: str | Sequence[str] | None, all_netns: bool,
                   notes: list[str]) -> list[linux.NetnsRef]:
    """The namespaces an API call's ``netns``/``all_netns`` name (checked: a
    UsageError for a bad value); what could not be read is added to ``notes``."""
    if all_netns:
        everywhere, unreadable = linux.scan_all_netns()
        if unreadable:
            notes.append(f"the network namespaces of {unreadable} processes could not be read "
                         "(permission denied): sockets in namespaces only they hold are not listed")
        return everywhere
    if netns is None:
        return [linux.current_netns()]
    refs: dict[int, linux.NetnsRef] = {}
    for spec in _strings(netns, "netns", "a namespace name, path or pid (as a string)"):
        ref = linux.resolve_netns(spec)
        refs.setdefault(ref.inode, ref)
    return list(refs.values())


@dataclass(frozen=True, slots=True)
class ProcessFilter:
    """--pid/--user/--command as one test over (pid, command, uid): an
    ``owners.ProcessPredicate``. ``pids`` (when given) lets a caller look at
    those processes only instead of every one."""

    pids: frozenset[int] | None
    uid: int | None
    command: str | None

    def __call__(self, pid: int, command: str, uid: int) -> bool:
        return ((self.pids is None or pid in self.pids) and (self.uid is None or uid == self.uid)
                and (self.command is None or command == self.command))


def process_filter(pid: int | Iterable[int] | None, user: str | int | None,
                   command: str | None) -> ProcessFilter | None:
    """The API's ``pid``/``user``/``command`` arguments, checked (a UsageError for a
    bad value), as a ``ProcessFilter``; None when none is given."""
    if pid is None and user is None and command is None:
        return None
    pids: set[int] | None = None
    if pid is not None:
        pids = set()
        for p in _items(pid):
            if not isinstance(p, int) or isinstance(p, bool) or p < 1:
                raise UsageError(f"pid: expected process ids (positive integers), got {p!r}")
            pids.add(p)
    if command is not None and not isinstance(command, str):
        raise UsageError(f"command: expected a process name, got {command!r}")
    uid: int | None = None
    if user is not None:
        if isinstance(user, bool) or not isinstance(user, int | str):
            raise UsageError(f"user: expected a user name or uid, got {user!r}")
        if isinstance(user, int) or user.isdigit():
            uid = int(user)
        else:
            import pwd

            try:
                uid = pwd.getpwnam(user).pw_uid
            except KeyError:
                raise UsageError(f"unknown user {user!r}") from None

    return ProcessFilter(None if pids is None else frozenset(pids), uid, command)


def mark_path(s: Socket) -> None:
    """Set ``local.exists`` on a named unix socket: is its socket file still there?"""
    from .model import UnixAddress

    local = s.local
    if isinstance(local, UnixAddress) and not local.abstract and local.path:
        local.exists = path_is_socket_file(local.path, s.vfs)


def mark_paths(found: Iterable[Socket]) -> None:
    for s in found:
        mark_path(s)


def path_is_socket_file(path: str, vfs: tuple[int, int] | None) -> bool:
    """True when ``path`` is this socket's file (same device and inode where known)."""
    import stat

    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        return False
    return vfs is None or (st.st_dev, st.st_ino) == vfs
