"""Who holds each socket: one scan of /proc/PID/fd for the whole host.

Socket inodes are unique host-wide (sockfs), so one scan serves every network
namespace. Like ss and lsof we readlink every fd of every process we look at;
unlike them we look only at the processes a --pid/--user/--command filter
allows, so asking for less costs less, and we read a process's command name
only when it holds a socket.

The map is packed (``OwnerMap``): parallel arrays of (inode, pid, fd) per
socket descriptor and an open-addressing hash table of entry numbers, about 30
bytes per descriptor where an ``Owner`` object, a list and a dict entry took
about 250. ``Owner`` objects are made only when a socket's holders are asked for.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from .model import Owner
from .packed import InodeIndex

ProcessPredicate = Callable[[int, str, int], bool]  # (pid, command, uid) -> keep?

class OwnerMap(Mapping[int, list[Owner]]):
    """inode -> the processes holding it (sorted by pid, then fd).

    ``denied`` counts processes whose fds we could not read. Entries are added a
    process at a time (``add``) or as a whole packed map from another process
    (``packed`` there, ``merge`` here).
    """

    def __init__(self) -> None:
        self._index = InodeIndex()
        self._pids = array("i")
        self._fds = array("i")
        self._procs: dict[int, tuple[str, int, str | None]] = {}  # pid -> (command, uid, user)
        self.denied = 0

    @property
    def by_inode(self) -> OwnerMap:
        """The map itself (it is the mapping; kept for callers of the dict it once was)."""
        return self

    def add(self, pid: int, command: str, uid: int, inodes: list[int], fds: list[int]) -> None:
        """One process's socket descriptors: the inode and fd number of each."""
        if len(inodes) != len(fds):
            raise ValueError("one fd number per inode")
        if inodes:
            self._index.extend(inodes)
            self._fds.extend(fds)
            self._pids.extend(array("i", [pid]) * len(inodes))
            self._procs[pid] = (command, uid, user_name(uid))

    def packed(self) -> tuple[Any, ...]:
        """Everything as plain values (for marshal), for ``merge`` in another process."""
        procs = [(pid, command, uid) for pid, (command, uid, _) in self._procs.items()]
        return (procs, self._index.keys.tobytes(), self._pids.tobytes(), self._fds.tobytes(),
                self.denied)

    def merge(self, packed: tuple[Any, ...]) -> None:
        procs, inodes, pids, fds, denied = packed
        if not (isinstance(procs, list) and isinstance(denied, int) and isinstance(inodes, bytes)
                and isinstance(pids, bytes) and isinstance(fds, bytes)):
            raise ValueError("not a packed OwnerMap")
        for pid, command, uid in procs:
            self._procs[pid] = (command, uid, user_name(uid))
        self._index.frombytes(inodes)
        self._pids.frombytes(pids)
        self._fds.frombytes(fds)
        self.denied += denied

    def holders(self, inode: int) -> list[Owner]:
        """The processes holding ``inode``; empty when none (or unknown)."""
        index = self._index
        entry = index.first(inode)
        if entry < 0:
            return []
        pids, fds, procs, chain = self._pids, self._fds, self._procs, index.chain
        found = []
        while entry >= 0:  # usually once: a socket has one holder
            pid = pids[entry]
            command, uid, user = procs[pid]
            found.append(Owner(pid, command, fds[entry], user, uid))
            entry = chain[entry]
        if len(found) > 1:
            found.sort(key=lambda o: (o.pid, o.fd))
        return found

    def __getitem__(self, inode: int) -> list[Owner]:
        found = self.holders(inode)
        if not found:
            raise KeyError(inode)
        return found

    def get(self, inode: int, default: object = None) -> list[Owner] | None:  # type: ignore[override]
        return self.holders(inode) or default  # type: ignore[return-value]

    def __contains__(self, inode: object) -> bool:
        return isinstance(inode, int) and self._index.first(inode) >= 0

    def __iter__(self) -> Iterator[int]:
        return self._index.distinct()

    def __len__(self) -> int:
        return sum(1 for _ in self._index.distinct())

    def descriptors(self) -> int:
        """How many socket descriptors the map holds (a socket held twice counts twice)."""
        return len(self._index)


_user_names: dict[int, str | None] = {}


def user_name(uid: int) -> str | None:
    name = _user_names.get(uid, "")
    if name == "":
        import pwd

        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = None
        _user_names[uid] = name
    return name


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return "?"


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def scan_into(
    omap: OwnerMap,
    pids: Iterable[int],
    process_filter: ProcessPredicate | None = None,
    wanted: Collection[int] | None = None,
) -> None:
    """Add the sockets each process in ``pids`` holds (only ``wanted`` inodes, if given).

    ``process_filter`` sees (pid, command, uid) before the fds of a process are
    read, so a filtered-out process costs one stat. Processes that exit
    mid-scan are skipped silently; those we may not look into are counted in
    ``omap.denied`` (other users' processes only: our own are never hidden).
    """
    readlink = os.readlink
    listdir = os.listdir
    my_uid = os.geteuid()
    for pid in pids:
        command: str | None = None
        uid = -1
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
            if process_filter is not None:
                command = _command(pid)
                if not process_filter(pid, command, uid):
                    continue
            dirfd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            if uid != my_uid:
                omap.denied += 1
            continue
        except OSError:  # ENOENT: the process exited
            continue
        inodes: list[int] = []
        fds: list[int] = []
        try:
            for fd in listdir(dirfd):
                try:
                    target = readlink(fd, dir_fd=dirfd)
                except OSError:
                    continue  # closed while we looked
                if target[:8] == "socket:[":  # "socket:[12345]"
                    inode = int(target[8:-1])
                    if wanted is None or inode in wanted:
                        inodes.append(inode)
                        fds.append(int(fd))
        except OSError:
            continue
        finally:
            os.close(dirfd)
        if inodes:
            omap.add(pid, command if command is not None else _command(pid), uid, inodes, fds)


def scan_owners(
    wanted: Collection[int] | None = None,
    process_filter: ProcessPredicate | None = None,
    pids: Collection[int] | None = None,
) -> OwnerMap:
    """Map socket inodes (only ``wanted`` ones, if given) to the processes holding them."""
    omap = OwnerMap()
    scan_into(omap, all_pids() if pids is None else pids, process_filter, _as_set(wanted))
    return omap


def _as_set(wanted: Collection[int] | None) -> Collection[int] | None:
    if wanted is None or isinstance(wanted, (set, frozenset)):
        return wanted
    return set(wanted)


# The work queue: unit numbers (4 bytes each) in a pipe that both processes read;
# a pipe read is atomic, so each unit goes to exactly one of them. The pipe's
# default capacity (16 pages) holds 16,384 units, written before the fork.
_UNIT = 4
_QUEUE_BYTES = 1 << 16


class BackgroundScan:
    """The owner scan of the whole host, shared between this process and a forked child.

    The scan is mostly readlink() system calls, the dump mostly parsing. The
    child starts scanning at once; this process joins in when ``result`` is
    called, after its own work (the dump, for ``sockets()``) or at once (for
    a stream, which needs the owners before the first socket). Both take the
    next few processes from a shared queue until it is empty, so neither waits
    for the other whatever the balance of scan and dump. The child sends its
    part of the map, packed, when the queue is empty. Where forking is unsafe
    (other threads running) or there is one core, ``result`` scans everything here.
    """

    def __init__(self) -> None:
        self._child = 0
        self._queue = self._results = -1
        self._pids = all_pids()
        import threading

        if (os.cpu_count() or 1) < 2 or threading.active_count() > 1 or not self._pids:
            return
        per_unit = -(-len(self._pids) // (_QUEUE_BYTES // _UNIT))
        units = -(-len(self._pids) // per_unit)
        queue_r, queue_w = os.pipe2(os.O_CLOEXEC)
        try:
            import fcntl

            fcntl.fcntl(queue_w, fcntl.F_SETFL, os.O_NONBLOCK)
            data = array("I", range(units)).tobytes()
            written = os.write(queue_w, data)  # all of it, unless the pipe is smaller than usual
            written -= written % _UNIT
        except BaseException:
            os.close(queue_r)
            raise
        finally:
            os.close(queue_w)  # EOF once the units are taken
        self._per_unit = per_unit
        self._leftover = range(written // _UNIT, units)  # what did not fit: ours
        results_r, results_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # child: scan, send, and leave without running any cleanup
            code = 0
            try:
                os.close(results_r)
                self._queue = queue_r
                _send(results_w, self._scan_queue().packed())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(results_w)
        self._child, self._queue, self._results = pid, queue_r, results_r

    def _units(self) -> Iterator[int]:
        while True:
            token = os.read(self._queue, _UNIT)
            if len(token) < _UNIT:
                return
            yield int.from_bytes(token, "little")

    def _scan_queue(self, omap: OwnerMap | None = None) -> OwnerMap:
        omap = OwnerMap() if omap is None else omap
        pids, per_unit = self._pids, self._per_unit
        for unit in self._units():
            scan_into(omap, pids[unit * per_unit : (unit + 1) * per_unit])
        return omap

    def result(self, wanted: Collection[int] | None = None) -> OwnerMap:
        """The whole map (``wanted`` is accepted for older callers and ignored)."""
        if not self._child:
            omap = OwnerMap()
            scan_into(omap, self._pids)
            return omap
        try:
            omap = self._scan_queue()
            for unit in self._leftover:
                scan_into(omap, self._pids[unit * self._per_unit : (unit + 1) * self._per_unit])
            packed = _receive(self._results)
            _, status = os.waitpid(self._child, 0)
            self._child = 0
        finally:
            self.close()
        if status != 0 or packed is None:  # the child failed: do it all here
            omap = OwnerMap()
            scan_into(omap, self._pids)
            return omap
        omap.merge(packed)
        return omap

    def close(self) -> None:
        """Stop the child if it still runs, reap it, close the pipes (after an error)."""
        if self._child:
            import signal

            pid, self._child = self._child, 0
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        for name in ("_queue", "_results"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)


def _send(fd: int, packed: tuple[Any, ...]) -> None:
    import marshal

    view = memoryview(marshal.dumps(packed))
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


def _receive(fd: int) -> tuple[Any, ...] | None:
    import marshal

    data = bytearray()
    while chunk := os.read(fd, 1 << 20):
        data += chunk
    try:
        packed = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    return packed if isinstance(packed, tuple) and len(packed) == 5 else None
