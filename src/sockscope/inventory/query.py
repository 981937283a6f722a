"""The inventory API: ``sockets()``, and ``start()`` for the CLI.

One pass: for each network namespace asked for, enter it, dump every kind of
socket over one sock_diag netlink socket (falling back to /proc/net for a
kind whose diag module is missing), apply the filter, then one /proc scan for
the owners of what is left.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.netlink import sockdiag
from sockscope.netlink.codec import NetlinkError
from sockscope.netlink.socket import NETLINK_SOCK_DIAG, NetlinkSocket
from sockscope.platform import linux

from . import owners as owners_mod
from .model import ALL_STATES_MASK, STATE_NUMBERS, Socket

if TYPE_CHECKING:
    from .filter import SocketFilter

PROTOS = ("tcp", "udp", "raw", "icmp", "unix", "packet", "netlink")
INET_PROTOS = ("tcp", "udp", "raw", "icmp")
# Kinds no sock_diag handler covers: /proc/net is their source, not a fallback.
_PROCFS_ONLY = ("icmp",)
FAMILIES = ("inet", "inet6", "unix", "packet", "netlink")

# ss's -l: "listening" is every socket not connected, LISTEN and UNCONN (CLOSE),
# so that bound UDP, raw, packet and unix datagram sockets are listed too.
NOT_CONNECTED = (1 << STATE_NUMBERS["LISTEN"]) | (1 << STATE_NUMBERS["UNCONN"])

# Diag errors meaning "this kernel cannot dump that kind": fall back to /proc/net.
_MISSING = {errno.ENOENT, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EINVAL}


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


class PendingInventory:
    """Sockets dumped and filtered, owners still being looked up.

    The owner scan runs beside the dump (see BackgroundScan); a caller with
    other work to do (the CLI formats its table) does it before ``finish``.
    """

    def __init__(self, found: list[Socket], notes: list[str], fallbacks: list[str],
                 scan: owners_mod.BackgroundScan | None) -> None:
        self.sockets = found
        self._notes = notes
        self._fallbacks = sorted(set(fallbacks))
        self._scan = scan

    def finish(self) -> Inventory:
        if self._scan is not None:
            scan, self._scan = self._scan, None
            _attach_owners(self.sockets, None, self._notes, scan)
        return Inventory(self.sockets, self._notes, self._fallbacks)


def start(
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
) -> PendingInventory:
    """Sockets matching every condition given; owners attached by ``finish()``.

    ``proto``: tcp, udp, raw, unix, packet, netlink (default: all).
    ``family``: inet, inet6, unix, packet, netlink (default: all).
    ``states``: kernel state names (ESTABLISHED, LISTEN, ...); ``listening``
    True keeps the sockets that are not connected (LISTEN and UNCONN, as ss -l:
    listeners, bound UDP, raw, packet, unix datagram sockets), False the others. ``filter``: an ss filter
    expression. ``netns``: a name, path or pid (or several); ``all_netns``:
    every namespace on the host. ``info``: tcp_info; ``memory``: socket
    memory; ``extended``: cgroup id and mark. ``pid``/``user``/``command``: keep sockets held
    by matching processes. ``procfs``: read /proc/net even where sock_diag works.
    """
    protos = _as_tuple(proto, PROTOS, "protocol")
    families = _as_tuple(family, FAMILIES, "family")
    flt = filter_arg(filter)
    if flt is not None:
        extended = extended or flt.needs_extended  # fwmark/cgroup tests need those attributes
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
    if flt is not None:
        mask &= flt.kernel_states

    notes: list[str] = []
    refs = _namespaces(netns, all_netns, notes)
    process_filter = _process_filter(pid, user, command)
    # Start the owner scan now so that it overlaps the dumps (see BackgroundScan).
    scan = owners_mod.BackgroundScan() if owners and process_filter is None else None
    fallbacks: list[str] = []
    found: list[Socket] = []
    try:
        skipped = 0
        for ref in refs:
            try:
                found.extend(_dump_netns(ref, protos, families, mask, info, memory, extended,
                                         check_paths, procfs, fallbacks))
            except PermissionNeeded:
                if not all_netns:
                    raise
                skipped += 1  # --all-netns without root: show what can be seen
            except linux.NetnsGone:
                if not all_netns:
                    raise
                # Deleted since it was listed: it has no sockets to show any more.
        if skipped:
            notes.append(f"{skipped} network namespaces need root to enter and were skipped")
    except BaseException:
        if scan is not None:
            scan.result(())  # reap the scanning child before the error goes up
        raise
    if flt is not None:
        found = [s for s in found if flt.match(s)]
    if process_filter is not None:
        _attach_owners(found, process_filter, notes, None)
        found = [s for s in found if s.owners]
    if check_paths:
        mark_paths(found)
    return PendingInventory(found, notes, fallbacks, scan)


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
    if inv.notes:
        import warnings

        from .model import InventoryWarning

        for note in inv.notes:
            warnings.warn(note, InventoryWarning, stacklevel=2)
    return SocketList(inv.sockets, inv.notes)


def _namespaces(netns: str | Sequence[str] | None, all_netns: bool,
                notes: list[str]) -> list[linux.NetnsRef]:
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


def _dump_netns(ref: linux.NetnsRef, protos: Sequence[str], families: Sequence[str], mask: int,
                info: bool, memory: bool, extended: bool, want_vfs: bool, procfs: bool,
                fallbacks: list[str]) -> list[Socket]:
    out: list[Socket] = []
    with linux.in_netns(ref):
        ifname = linux.ifname_lookup()

        nl: NetlinkSocket | None = None
        if not procfs:
            try:
                nl = NetlinkSocket(NETLINK_SOCK_DIAG)
            except OSError:
                nl = None  # no sock_diag at all: every kind from /proc/net
        try:
            for kind, fam in _kinds(protos, families):
                got: list[Socket] | None = None
                if kind in _PROCFS_ONLY:
                    out.extend(_procfs_kind(kind, fam, ref.name, mask))
                    continue
                if nl is not None:
                    got = _dump_kind(nl, kind, fam, ref.name, mask, info, memory, extended,
                                     want_vfs, ifname)
                if got is None:
                    got = _procfs_kind(kind, fam, ref.name, mask)
                    fallbacks.append(f"{kind}{'6' if fam == 'inet6' else ''}")
                out.extend(got)
        finally:
            if nl is not None:
                # Our own diag socket is not part of the host's inventory.
                own = os.fstat(nl.fileno()).st_ino
                out = [s for s in out if s.inode != own]
                nl.close()
    return out


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
               ifname: Callable[[int], str | None]) -> list[Socket] | None:
    """One sock_diag dump; None when the kernel lacks the diag handler for it."""
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
            out: list[Socket] = []
            for batch in nl.dump_payloads(sockdiag.SOCK_DIAG_BY_FAMILY, req):
                out.extend(parser.parse_all(batch))
            return out
        if kind == "unix":
            req = sockdiag.unix_request(mask, want_vfs, memory)
            return [sockdiag.parse_unix(m.payload, netns)
                    for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req)]
        if not mask & (1 << STATE_NUMBERS["UNCONN"]) and kind == "packet":
            return []  # packet sockets have no connection state: always UNCONN
        if kind == "packet":
            req = sockdiag.packet_request()
            return [sockdiag.parse_packet(m.payload, netns, ifname, memory)
                    for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req)]
        req = sockdiag.netlink_request()
        return [s for s in (sockdiag.parse_netlink(m.payload, netns, memory)
                            for m in nl.dump(sockdiag.SOCK_DIAG_BY_FAMILY, req))
                if mask & (1 << STATE_NUMBERS.get(s.state, 0))]
    except NetlinkError as exc:
        if exc.errno in _MISSING:
            return None
        raise SockscopeError(f"sock_diag dump of {kind} sockets failed: {exc.strerror}") from None


def _procfs_kind(kind: str, fam: str, netns: str, mask: int) -> list[Socket]:
    from . import procnet

    name = kind + ("6" if fam == "inet6" else "") if kind in INET_PROTOS else kind
    return [s for s in procnet.read_sockets(name, netns)
            if mask & (1 << STATE_NUMBERS.get(s.state, 0))]


def _process_filter(pid: int | Iterable[int] | None, user: str | int | None,
                    command: str | None) -> owners_mod.ProcessPredicate | None:
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

    def keep(p: int, comm: str, puid: int) -> bool:
        return ((pids is None or p in pids) and (uid is None or puid == uid)
                and (command is None or comm == command))

    return keep


def _attach_owners(found: list[Socket], process_filter: owners_mod.ProcessPredicate | None,
                   notes: list[str], scan: owners_mod.BackgroundScan | None) -> None:
    wanted = {s.inode for s in found if s.inode}
    wanted.update(s.peer_inode for s in found if s.peer_inode)
    if scan is not None:
        omap = scan.result(wanted)  # always collected, so the child is reaped
    elif not wanted:
        return
    else:
        omap = owners_mod.scan_owners(wanted, process_filter)
    by_inode = omap.by_inode
    for s in found:
        if s.inode:
            holders = by_inode.get(s.inode)
            if holders:
                s.owners = holders
        if s.peer_inode:
            s.peer_owners = by_inode.get(s.peer_inode, [])
    if omap.denied and os.geteuid() != 0:
        notes.append(
            f"owners of other users' sockets need root ({omap.denied} processes not readable)"
        )
    elif omap.denied:
        notes.append(f"{omap.denied} processes could not be inspected")


def mark_paths(found: list[Socket]) -> None:
    """Set ``local.exists`` on named unix sockets: is their socket file still there?"""
    from .model import UnixAddress

    for s in found:
        local = s.local
        if isinstance(local, UnixAddress) and not local.abstract and local.path:
            local.exists = path_is_socket_file(local.path, s.vfs)


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
