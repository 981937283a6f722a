"""Linux-specific calls: network namespaces (setns), constants Python lacks.

Network namespaces are per thread: ``in_netns`` switches the calling thread,
runs the body, and always switches back. Sockets opened inside keep the
namespace they were created in, so callers open a netlink socket inside and
use it outside.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError

if TYPE_CHECKING:
    import subprocess

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux 4.11
NETNS_RUN_DIR = "/run/netns"


class NetnsGone(SockscopeError):
    """A namespace looked into earlier can no longer be entered (exit status 1:
    the input was right when it was given)."""


@dataclass(frozen=True, slots=True)
class NetnsRef:
    """A network namespace: its inode (identity), a display name, a path to open."""

    inode: int
    name: str
    path: str


def current_netns() -> NetnsRef:
    path = "/proc/thread-self/ns/net"
    inode = os.stat(path).st_ino
    return NetnsRef(inode, display_name(inode), path)


def display_name(inode: int, named: dict[int, str] | None = None) -> str:
    """The name ``ip netns`` gave it; "default" for init's namespace; else net:[inode].

    Where pid 1 cannot be inspected, the process's own namespace counts as default.
    """
    name = (_named_netns() if named is None else named).get(inode)
    if name:
        return name
    try:
        init = os.stat("/proc/1/ns/net").st_ino
    except OSError:  # pid 1 hidden (a sandbox): take our own process's namespace
        init = os.stat("/proc/self/ns/net").st_ino
    return "default" if inode == init else f"net:[{inode}]"


def _named_netns() -> dict[int, str]:
    """Inode -> name for the namespaces ``ip netns`` created (/run/netns)."""
    names: dict[int, str] = {}
    try:
        entries = os.listdir(NETNS_RUN_DIR)
    except OSError:
        return names
    for name in sorted(entries):
        # An entry is a bind mount of the namespace; in a mount namespace that does
        # not see the mount (`ip netns exec` makes one) it is an empty file.
        try:
            fd = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _namespace_type(fd) == CLONE_NEWNET:
                names.setdefault(os.fstat(fd).st_ino, name)
        finally:
            os.close(fd)
    return names


def resolve_netns(spec: str) -> NetnsRef:
    """A namespace named as ``ip netns`` does, by path, or by the pid of a process in it.

    The file is checked to be a network namespace (an nsfs file of type
    CLONE_NEWNET), so that ``-N /etc/passwd`` is a usage error, not a failed setns.
    """
    if not isinstance(spec, str):
        raise UsageError(f"a network namespace is a name, path or pid as a string, not {spec!r}")
    if spec.isdigit():
        path = f"/proc/{spec}/ns/net"
        what = f"process {spec}"
    elif "/" in spec:
        path = spec
        what = spec
    else:
        path = os.path.join(NETNS_RUN_DIR, spec)
        what = f"network namespace {spec!r}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"{what} not found") from None
    except PermissionError:
        raise PermissionNeeded(f"cannot open {what}: permission denied") from None
    except IsADirectoryError:
        raise UsageError(f"{spec} is a directory, not a network namespace") from None
    except OSError as exc:  # a FIFO without a writer, a dead device...
        raise UsageError(f"{spec} is not a network namespace ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{spec} is a directory, not a network namespace")
        if _namespace_type(fd) != CLONE_NEWNET:
            raise UsageError(f"{spec} is not a network namespace")
    finally:
        os.close(fd)
    return NetnsRef(st.st_ino, display_name(st.st_ino), path)


def _namespace_type(fd: int) -> int | None:
    """The CLONE_NEW* type of a namespace file (NS_GET_NSTYPE), None for any other file."""
    import fcntl

    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:  # ENOTTY: not an nsfs file
        return None


def all_netns() -> list[NetnsRef]:
    """Every network namespace on the host: named ones, then those only processes hold.

    Namespaces are told apart by inode; the current one comes first. Without root,
    the namespaces of other users' processes cannot be read: see `scan_all_netns`.
    """
    return scan_all_netns()[0]


def scan_all_netns() -> tuple[list[NetnsRef], int]:
    """`all_netns`, and how many processes' namespaces could not be read (permission
    denied: another user's process, without root)."""
    seen: dict[int, NetnsRef] = {}
    here = os.stat("/proc/self/ns/net").st_ino
    named = _named_netns()
    seen[here] = NetnsRef(here, display_name(here, named), "/proc/self/ns/net")
    for inode, name in named.items():
        seen.setdefault(inode, NetnsRef(inode, name, os.path.join(NETNS_RUN_DIR, name)))
    unreadable = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        path = f"/proc/{entry}/ns/net"
        try:
            inode = os.stat(path).st_ino
        except PermissionError:
            unreadable += 1
            continue
        except OSError:  # exited meanwhile
            continue
        if inode not in seen:
            seen[inode] = NetnsRef(inode, display_name(inode, named), path)
    return list(seen.values()), unreadable


def processes_netns(pids: Iterable[int]) -> list[NetnsRef]:
    """The network namespaces these processes are in (one each; a process that
    has exited, or whose namespace we may not read, is left out)."""
    named = _named_netns()
    seen: dict[int, NetnsRef] = {}
    for pid in pids:
        path = f"/proc/{pid}/ns/net"
        try:
            inode = os.stat(path).st_ino
        except OSError:
            continue
        if inode not in seen:
            seen[inode] = NetnsRef(inode, display_name(inode, named), path)
    return list(seen.values())


def ifname_lookup() -> Callable[[int], str | None]:
    """Interface index -> name, cached; resolved in the namespace of the calling
    thread at call time, so use it while inside the namespace the index belongs to."""
    import socket

    names: dict[int, str | None] = {}

    def ifname(index: int) -> str | None:
        if index not in names:
            try:
                names[index] = socket.if_indextoname(index)
            except OSError:  # the interface went away
                names[index] = None
        return names[index]

    return ifname


_setns = None


def _libc_setns(fd: int, nstype: int) -> None:
    # os.setns arrived in Python 3.12; Debian 12 ships 3.11, so fall back to libc.
    global _setns
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
        return
    if _setns is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        _setns = libc.setns
    if _setns(fd, nstype) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def in_netns(ref: NetnsRef | None) -> Iterator[None]:
    """Run the body with the calling thread inside ``ref`` (None: stay here)."""
    if ref is None:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if os.fstat(here).st_ino == ref.inode:
            yield
            return
        target = _open_again(ref)
        try:
            try:
                _libc_setns(target, CLONE_NEWNET)
            except PermissionError:
                raise PermissionNeeded(
                    f"entering network namespace {ref.name} needs root (CAP_SYS_ADMIN)"
                ) from None
            except OSError as exc:  # EINVAL: the file is no namespace (any more)
                raise NetnsGone(f"cannot enter network namespace {ref.name}: {exc.strerror}") from None
        finally:
            os.close(target)
        try:
            yield
        finally:
            _libc_setns(here, CLONE_NEWNET)
    finally:
        os.close(here)


def _open_again(ref: NetnsRef) -> int:
    """A descriptor of ``ref``'s namespace, opened by its path again. The path may
    have gone (``ip netns del``, the process exited) or now name another namespace
    (deleted and added again): either way the namespace asked for is gone."""
    try:
        fd = os.open(ref.path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsGone(f"network namespace {ref.name} has gone") from None
    except PermissionError:
        raise PermissionNeeded(f"entering network namespace {ref.name} needs root") from None
    if os.fstat(fd).st_ino != ref.inode:
        os.close(fd)
        raise NetnsGone(f"network namespace {ref.name} has gone ({ref.path} names another now)")
    return fd


# Capability numbers (linux/capability.h) of the ones sockscope names in messages.
CAPABILITIES = {"CAP_DAC_READ_SEARCH": 2, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
                "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21}


def missing_capabilities(names: Sequence[str]) -> list[str]:
    """Those of ``names`` (keys of CAPABILITIES) not in this process's effective set
    (/proc/self/status CapEff): what a root-less service lacks, said before it fails."""
    effective = 0
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    effective = int(line.split()[1], 16)
                    break
    except (OSError, ValueError):
        pass
    return [name for name in names if not effective >> CAPABILITIES[name] & 1]


def sbin_tool(name: str) -> str | None:
    """The path of an administration command (nft, iptables-restore...): on PATH, or
    in /usr/sbin or /sbin, which a non-login root shell may not have on PATH."""
    import shutil

    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def run_sbin_tool(
    name: str, args: Sequence[str], *, package: str, script: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``name args`` with ``script`` on stdin, output captured as text; a missing
    command is a SockscopeError naming the Debian ``package`` to install."""
    import subprocess

    path = sbin_tool(name)
    if path is None:
        raise SockscopeError(f"{name} not found: install the {package} package (scripts/setup.sh does)")
    return subprocess.run([path, *args], input=script, capture_output=True, text=True, timeout=timeout)
