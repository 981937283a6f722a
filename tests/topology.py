"""Throw-away network topologies built from Linux network namespaces, for tests.

Everything a `Topology` creates is named ``ssc-<pid>-<token>-<label>`` (namespaces)
or ``ssc<pid>h<n>`` (the rare host-side veth end), where <pid> is the creating
process. That encoding is what lets `cleanup_stale` tell leftovers of a killed run
(owner pid dead) from the live work of a parallel run (owner pid alive), and the
random token keeps two topologies of one process apart.

Teardown happens on `close()`, on leaving the ``with`` block, at interpreter exit
(atexit) and on SIGTERM/SIGHUP, so an interrupted test run does not leave
namespaces, veths or processes behind. Import as ``from topology import Topology``
(tests/conftest.py puts tests/ on sys.path).

Needs root and iproute2 (``ip``); ``nft`` only for `Topology.nft`.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import logging
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, NamedTuple

log = logging.getLogger("sockscope.tests.topology")

PREFIX = "ssc-"
NETNS_DIR = Path("/run/netns")
IFNAMSIZ = 15  # the kernel's limit on interface names (16 bytes with the NUL)

_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
# Host-side veth ends; module-wide counter because names must be unique per host,
# not per Topology.
_HOST_IF_RE = re.compile(r"ssc(\d+)h\d+")
_host_if_counter = itertools.count()

# Python programs run inside namespaces by the UDP echo helpers. The server
# echoes the payload plus the source address it saw, so a probe proves both that
# the path works and which address the packet really came from (no NAT, no lo).
_ECHO_SERVER = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((host, port))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data + b"|" + peer[0].encode(), peer)
"""

_ECHO_CLIENT = r"""
import os, socket, sys
host, port, tries, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(wait)
token = os.urandom(8).hex().encode()
for _ in range(tries):
    try:
        s.sendto(token, (host, port))
        while True:
            data, _peer = s.recvfrom(65535)
            if data.startswith(token + b"|"):
                print(data[len(token) + 1:].decode())
                sys.exit(0)
    except TimeoutError:
        continue  # lost (e.g. first packet waiting on ARP/ND): send again
    except OSError as e:
        print(e, file=sys.stderr)  # unreachable etc.: report, retry
sys.exit(1)
"""


class TopologyError(subprocess.CalledProcessError):
    """A command run for the topology failed; unlike CalledProcessError, str() shows stderr."""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout or "").strip()
        return f"{super().__str__()}{': ' + detail if detail else ''}"


class TopologyTeardownError(RuntimeError):
    """Some part of a topology could not be removed (details were logged too)."""


@dataclass(frozen=True)
class Netns:
    """A named network namespace; usable wherever a name is expected via str()."""

    name: str
    label: str

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)

    def __str__(self) -> str:
        return self.name


class Veth(NamedTuple):
    """Interface names of a veth pair: the end in ns_a and the end in ns_b."""

    name_a: str
    name_b: str


@dataclass(frozen=True)
class LineLink:
    """One hop of a `Line`: a veth between nodes a and b and their addresses (no prefix)."""

    a: Netns
    b: Netns
    veth: Veth
    addr_a: str
    addr_b: str
    addr6_a: str | None
    addr6_b: str | None


@dataclass(frozen=True)
class Line:
    """left - r1 - ... - rN - right, fully routed (see `Topology.line`)."""

    nodes: tuple[Netns, ...]
    links: tuple[LineLink, ...]

    @property
    def left(self) -> Netns:
        return self.nodes[0]

    @property
    def right(self) -> Netns:
        return self.nodes[-1]

    @property
    def routers(self) -> tuple[Netns, ...]:
        return self.nodes[1:-1]

    @property
    def left_addr(self) -> str:
        return self.links[0].addr_a

    @property
    def right_addr(self) -> str:
        return self.links[-1].addr_b

    @property
    def left_addr6(self) -> str | None:
        return self.links[0].addr6_a

    @property
    def right_addr6(self) -> str | None:
        return self.links[-1].addr6_b


def _ip(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args]
    # A hung `ip` would hang the whole test run; 30 s is far beyond any normal call.
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=30)
    if check and proc.returncode != 0:
        raise TopologyError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def pid_alive(pid: int) -> bool:
    """True if pid is a running process; zombies count as dead (they hold nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain ")".
    return stat[stat.rindex(")") + 2] not in "ZX"


def list_netns(prefix: str = PREFIX) -> list[str]:
    """Names of the named namespaces (those in /run/netns) starting with prefix."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:  # no namespace was ever added since boot
        return []


def netns_pids(name: str) -> list[int]:
    """Pids of processes living in the named namespace (ip netns pids)."""
    proc = _ip("netns", "pids", name, check=False)
    return [int(p) for p in proc.stdout.split()] if proc.returncode == 0 else []


def _kill_netns_pids(name: str) -> None:
    # Anything still inside one of our namespaces was started by the test (even if
    # it left our process group with setsid); SIGKILL because teardown must finish.
    for pid in netns_pids(name):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _delete_netns(name: str) -> None:
    _kill_netns_pids(name)
    proc = _ip("netns", "delete", name, check=False)
    if proc.returncode != 0 and (NETNS_DIR / name).exists():
        raise TopologyError(proc.returncode, proc.args, proc.stdout, proc.stderr)


def _is_stale(name: str, prefix: str) -> bool:
    """Whether ``<prefix><pid>-<token>-<label>`` was left behind by its creator.

    Stale if the pid is dead, or if it is our own pid (reused after an earlier run
    was killed) but no live Topology of this process has that token. Names that do
    not parse are not ours to judge.
    """
    m = re.fullmatch(re.escape(prefix) + r"(\d+)-([0-9a-f]+)-.+", name)
    if m is None:
        return False
    pid, token = int(m.group(1)), m.group(2)
    if pid == os.getpid():
        with _live_lock:
            return token not in {t.token for t in _live}
    return not pid_alive(pid)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces (and host veth ends) whose creating process is dead.

    Processes still running inside such a namespace are killed first, otherwise the
    namespace (and the veths in it) would outlive its name. Names we cannot parse, or
    whose owner is alive (a parallel run), are left alone. Returns what was removed.
    A pid reused by another live process only delays the cleanup, never harms.
    """
    removed = []
    for name in list_netns(prefix):
        if not _is_stale(name, prefix):
            continue
        try:
            _delete_netns(name)
            removed.append(name)
        except TopologyError as e:  # e.g. a parallel run removed it first
            log.warning("cleanup_stale: %s", e)
    if prefix == PREFIX:  # host-side veth names follow the default prefix only
        links = _ip("-o", "link", "show", check=False).stdout
        for m in re.finditer(r"^\d+: (ssc\d+h\d+)[@:]", links, re.MULTILINE):
            ifname = m.group(1)
            owner = _HOST_IF_RE.fullmatch(ifname)
            if owner and not pid_alive(int(owner.group(1))):
                if _ip("link", "delete", ifname, check=False).returncode == 0:
                    removed.append(ifname)
    return removed


# ---------------------------------------------------------------------------
# Emergency teardown: atexit and fatal signals.

_live: set[Topology] = set()
_live_lock = threading.RLock()
_handlers_installed = False
_previous_handlers: dict[int, Any] = {}
_CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _close_all_live() -> None:
    with _live_lock:
        # A forked child (os.fork in a test) inherits _live and our handlers, but the
        # topologies belong to the parent: only their creator tears them down.
        topologies = [t for t in _live if t._owner == os.getpid()]
    for topo in topologies:
        try:
            topo.close(strict=False)
        except Exception:  # the process is going down; log and keep cleaning
            log.exception("emergency teardown of %r failed", topo)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _close_all_live()
    prev = _previous_handlers.get(signum)
    if callable(prev):
        prev(signum, frame)
    elif prev == signal.SIG_IGN:
        return
    else:
        # Default (or a handler installed from C that we cannot call): die of the
        # same signal so the parent sees the usual exit status.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_close_all_live)
    # Installed lazily (first Topology) so we chain to whatever the test runner
    # set up before; signal.signal only works in the main thread.
    if threading.current_thread() is not threading.main_thread():
        log.warning("Topology created outside the main thread: no SIGTERM cleanup")
        return
    for signum in _CLEANUP_SIGNALS:
        _previous_handlers[signum] = signal.getsignal(signum)
        signal.signal(signum, _on_signal)


def _new_token() -> str:
    # Random rather than a counter so a reused pid does not recreate the names an
    # earlier, killed run left behind; unique among this process's live topologies.
    with _live_lock:
        used = {t.token for t in _live}
    while (token := secrets.token_hex(2)) in used:
        pass
    return token


# ---------------------------------------------------------------------------


@dataclass(eq=False)
class Topology:
    """A set of namespaces, veths and processes that are all removed together.

    Use as a context manager or call `close()`; the pytest fixture `topology` does
    that for you. Not thread-safe: build a topology from one thread.
    """

    kill_timeout: float = 2.0  # SIGTERM grace period before SIGKILL at teardown
    token: str = field(default_factory=_new_token)
    _netns: list[Netns] = field(default_factory=list, init=False)
    _host_links: list[str] = field(default_factory=list, init=False)
    _procs: list[subprocess.Popen[Any]] = field(default_factory=list, init=False)
    _ifcount: dict[str, int] = field(default_factory=dict, init=False)
    # ifindexes for namespace-side veth ends; 10+ stays clear of lo (1) and the
    # indexes the kernel hands out itself in a fresh namespace.
    _ifindex: Iterator[int] = field(default_factory=lambda: itertools.count(10), init=False)
    _closed: bool = field(default=False, init=False)
    _owner: int = field(default_factory=os.getpid, init=False)

    def __post_init__(self) -> None:
        _install_handlers()
        with _live_lock:
            _live.add(self)

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A teardown problem must not replace the exception that ended the block.
        self.close(strict=exc is None)

    # -- building ---------------------------------------------------------

    @property
    def namespaces(self) -> tuple[Netns, ...]:
        return tuple(self._netns)

    @property
    def processes(self) -> tuple[subprocess.Popen[Any], ...]:
        return tuple(self._procs)

    def add_netns(self, label: str) -> Netns:
        """Create namespace ``ssc-<pid>-<token>-<label>`` with lo up and IPv6 DAD off."""
        self._check_open()
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"bad namespace label {label!r}: want {_LABEL_RE.pattern}")
        if any(ns.label == label for ns in self._netns):
            raise ValueError(f"namespace label {label!r} already used in this topology")
        ns = Netns(f"{PREFIX}{os.getpid()}-{self.token}-{label}", label)
        # Recorded before creation: a signal arriving mid-way still finds it.
        self._netns.append(ns)
        _ip("netns", "add", ns.name)
        _ip("-n", ns.name, "link", "set", "lo", "up")
        # DAD off for every interface created later, so also link-local IPv6
        # addresses are usable at once (nodad on add_veth covers global ones).
        self.set_sysctl(ns, "net.ipv6.conf.default.accept_dad", 0)
        self.set_sysctl(ns, "net.ipv6.conf.all.accept_dad", 0)
        return ns

    def add_veth(
        self,
        ns_a: Netns,
        ns_b: Netns | None,
        addr_a: str | None = "198.51.100.1/24",
        addr_b: str | None = "198.51.100.2/24",
        addr6_a: str | None = None,
        addr6_b: str | None = None,
        *,
        name_a: str | None = None,
        name_b: str | None = None,
    ) -> Veth:
        """Join two namespaces with a veth pair, address both ends and bring them up.

        Each end is created directly inside its namespace, so the default names
        (eth0, eth1, ... counted per namespace) never clash with the host's.
        ``ns_b=None`` puts the b end in the caller's namespace under a unique name
        ``ssc<pid>h<n>``; its addresses then become host routes, so give such links
        a subnet of their own. Addresses need a prefix length; None skips one.
        """
        self._check_open()
        self._check_ours(ns_a)
        if ns_b is not None:
            self._check_ours(ns_b)
        if ns_b is ns_a:
            raise ValueError("both veth ends in the same namespace")
        if_a = name_a or self._next_ifname(ns_a)
        if ns_b is None:
            if_b = name_b or f"ssc{os.getpid()}h{next(_host_if_counter)}"
        else:
            if_b = name_b or self._next_ifname(ns_b)
        for n in (if_a, if_b):
            if not 0 < len(n) <= IFNAMSIZ or "/" in n or n.strip() != n:
                raise ValueError(f"bad interface name {n!r} (at most {IFNAMSIZ} chars)")
        # Explicit, distinct ifindexes: two fresh namespaces would both number their
        # end 2, and the kernel treats a carrier change of a veth whose peer has the
        # same index as non-urgent, delaying it (and IPv6 set-up) by up to a second.
        # The host end keeps a kernel-chosen index (it must be unique host-wide).
        cmd = ["link", "add", "name", if_a, "index", str(next(self._ifindex)), "netns", ns_a.name]
        cmd += ["type", "veth", "peer", "name", if_b]
        if ns_b is None:
            self._host_links.append(if_b)  # record first, like add_netns
        else:
            cmd += ["index", str(next(self._ifindex)), "netns", ns_b.name]
        _ip(*cmd)
        ends = ((ns_a, if_a, (addr_a, addr6_a)), (ns_b, if_b, (addr_b, addr6_b)))
        for ns, ifname, addrs in ends:
            netns_opt = ("-n", ns.name) if ns is not None else ()
            for addr in addrs:
                if addr is None:
                    continue
                iface = ipaddress.ip_interface(addr)  # early, readable error on typos
                extra = ["nodad"] if iface.version == 6 else []
                _ip(*netns_opt, "addr", "add", addr, "dev", ifname, *extra)
            _ip(*netns_opt, "link", "set", ifname, "up")
        if addr6_a or addr6_b:
            for ns, ifname, _ in ends:
                self._wait_ipv6_ready(ns, ifname)
        return Veth(if_a, if_b)

    def add_route(self, ns: Netns, dest: str, via: str, dev: str | None = None) -> None:
        """``ip route add dest via via [dev dev]`` in ns (family taken from ``via``)."""
        self._check_ours(ns)
        family = "-6" if ipaddress.ip_address(via).version == 6 else "-4"
        _ip("-n", ns.name, family, "route", "add", dest, "via", via, *(["dev", dev] if dev else []))

    def set_sysctl(self, ns: Netns, key: str, value: object) -> None:
        """Write a sysctl inside ns, e.g. ("net.ipv4.ip_forward", 1).

        /proc/sys/net shows the netns of the process opening it, hence a shell run
        in the namespace rather than a write from this process.
        """
        self._check_ours(ns)
        rel = key if "/" in key else key.replace(".", "/")
        path = Path("/proc/sys") / rel
        self.run(ns, "sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", str(value), str(path))

    def set_forwarding(self, ns: Netns) -> None:
        """Make ns a router for IPv4 and IPv6."""
        self.set_sysctl(ns, "net.ipv4.ip_forward", 1)
        self.set_sysctl(ns, "net.ipv6.conf.all.forwarding", 1)

    def nft(self, ns: Netns, ruleset: str) -> None:
        """Load an nft ruleset (``nft -f -`` syntax) into ns; it dies with the namespace."""
        self.run(ns, "nft", "-f", "-", input=ruleset)

    def line(self, n_routers: int = 1, ipv6: bool = True) -> Line:
        """Build left - r1 - ... - rN - right with routes and forwarding on the routers.

        Hop i uses 198.51.100.<8i>/29 (.1 on its left node, .2 on its right node) and
        2001:db8:<i+1>::/64 (::1 / ::2). End hosts route by default via their
        neighbour; routers get a route per remote hop.
        """
        if not 0 <= n_routers <= 30:
            raise ValueError("n_routers must be 0..30 (hops are /29s of 198.51.100.0/24)")
        labels = ["left", *(f"r{i + 1}" for i in range(n_routers)), "right"]
        nodes = tuple(self.add_netns(label) for label in labels)
        links = []
        for i, (a, b) in enumerate(itertools.pairwise(nodes)):
            v4a, v4b = f"198.51.100.{8 * i + 1}", f"198.51.100.{8 * i + 2}"
            v6a, v6b = (f"2001:db8:{i + 1:x}::1", f"2001:db8:{i + 1:x}::2") if ipv6 else (None, None)
            veth = self.add_veth(
                a,
                b,
                f"{v4a}/29",
                f"{v4b}/29",
                f"{v6a}/64" if v6a else None,
                f"{v6b}/64" if v6b else None,
            )
            links.append(LineLink(a, b, veth, v4a, v4b, v6a, v6b))
        for k, node in enumerate(nodes):
            # Next hops: the neighbour's addresses on the hop to our left / right.
            to_left = (links[k - 1].addr_a, links[k - 1].addr6_a) if k > 0 else None
            to_right = (links[k].addr_b, links[k].addr6_b) if k < len(links) else None
            if to_left is None or to_right is None:  # an end host: default route only
                gw, gw6 = to_right if to_left is None else to_left
                self.add_route(node, "default", gw)
                if gw6:
                    self.add_route(node, "default", gw6)
                continue
            self.set_forwarding(node)
            for j in range(len(links)):
                if j in (k - 1, k):
                    continue  # directly connected
                gw, gw6 = to_left if j < k else to_right
                self.add_route(node, f"198.51.100.{8 * j}/29", gw)
                if gw6:
                    self.add_route(node, f"2001:db8:{j + 1:x}::/64", gw6)
        return Line(nodes, tuple(links))

    # -- running things -----------------------------------------------------

    def run(
        self,
        ns: Netns,
        *cmd: str,
        check: bool = True,
        input: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd in ns and wait; text stdout/stderr captured. Raises TopologyError on failure.

        Waits for EOF on stdout/stderr, so a command that leaves a daemon behind must
        redirect that daemon's output (or use `spawn`), or this runs into the timeout.
        """
        self._check_ours(ns)
        argv = ["ip", "netns", "exec", ns.name, *cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise TopologyError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc

    def spawn(self, ns: Netns, *cmd: str, **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start cmd in ns in the background, in its own process group; killed at teardown.

        Defaults: stdin from /dev/null, stdout/stderr piped, text mode. A chatty
        process must be given stdout=DEVNULL or a file, or it blocks on a full pipe.
        """
        self._check_open()
        self._check_ours(ns)
        kwargs: dict[str, Any] = {
            "stdin": subprocess.DEVNULL,
            "stdout": subprocess.PIPE,
            "stderr": subprocess.PIPE,
            "text": True,
        }
        kwargs.update(popen_kwargs)
        # Own session => own process group, so teardown can kill the whole tree and
        # a Ctrl-C on the terminal does not hit it before we do.
        kwargs["start_new_session"] = True
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", ns.name, *cmd], **kwargs)
        self._procs.append(proc)
        return proc

    def adopt(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        """Kill a process started elsewhere (e.g. under ``unshare -n``) at teardown too.

        It must lead its own process group (Popen(start_new_session=True)), since
        teardown signals the group.
        """
        self._check_open()
        try:
            leader = os.getpgid(proc.pid) == proc.pid
        except ProcessLookupError:
            leader = True  # already gone: teardown just reaps it
        if not leader:
            raise ValueError(f"pid {proc.pid} is not a process group leader (use start_new_session)")
        self._procs.append(proc)
        return proc

    def start_udp_echo(
        self, ns: Netns, host: str, port: int = 7, timeout: float = 5.0
    ) -> subprocess.Popen[Any]:
        """Spawn a UDP echo server bound to host:port in ns; returns once it is bound."""
        proc = self.spawn(ns, sys.executable, "-c", _ECHO_SERVER, host, str(port))
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise RuntimeError(f"UDP echo server in {ns.label} on {host}:{port} did not start: {err}")
        return proc

    def udp_probe(self, ns: Netns, host: str, port: int = 7, tries: int = 5, wait: float = 1.0) -> str | None:
        """Send a datagram from ns to an echo server; the source address it saw, or None."""
        proc = self.run(
            ns,
            sys.executable,
            "-c",
            _ECHO_CLIENT,
            host,
            str(port),
            str(tries),
            str(wait),
            check=False,
            timeout=tries * wait + 10,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    # -- teardown -------------------------------------------------------------

    def close(self, strict: bool = True) -> None:
        """Kill spawned processes, delete host veth ends and namespaces (newest first).

        Idempotent and re-entrant (a signal may interrupt it): each item is popped
        before it is handled. Every step is attempted; failures are logged and, if
        strict, raised together at the end as TopologyTeardownError.
        """
        errors: list[str] = []
        while self._procs:
            proc = self._procs.pop()
            try:
                self._stop(proc)
            except Exception as e:
                errors.append(f"stopping pid {proc.pid}: {e}")
        while self._host_links:
            ifname = self._host_links.pop()
            proc = _ip("link", "delete", ifname, check=False)
            if proc.returncode != 0 and Path(f"/sys/class/net/{ifname}").exists():
                errors.append(f"deleting link {ifname}: {proc.stderr.strip()}")
        while self._netns:
            ns = self._netns.pop()
            try:
                _delete_netns(ns.name)
            except Exception as e:
                errors.append(f"deleting netns {ns.name}: {e}")
        self._closed = True
        with _live_lock:
            _live.discard(self)
        for err in errors:
            log.error("topology teardown: %s", err)
        if errors and strict:
            raise TopologyTeardownError("; ".join(errors))

    def _stop(self, proc: subprocess.Popen[Any]) -> None:
        # The group outlives its leader if children remain, so signal it even when
        # the leader has already exited; the pgid cannot be reused while it exists.
        for sig, grace in ((signal.SIGTERM, self.kill_timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            raise RuntimeError("still running after SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers that ignored SIGTERM
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    # -- helpers --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("topology already closed")

    def _check_ours(self, ns: Netns) -> None:
        if ns not in self._netns:
            raise ValueError(f"{ns!r} does not belong to this topology")

    def _wait_ipv6_ready(self, ns: Netns | None, ifname: str, timeout: float = 3.0) -> None:
        # IPv6 on a link is only set up once the carrier-up event has been processed
        # (asynchronously); until then the multicast route is missing and the peer's
        # first neighbour solicitation is dropped, costing a 1 s retransmit. The
        # ff00::/8 route is the last thing that set-up adds that we can observe.
        netns_opt = ("-n", ns.name) if ns is not None else ()
        deadline = time.monotonic() + timeout
        while True:
            routes = _ip(*netns_opt, "-6", "route", "show", "table", "local", "dev", ifname).stdout
            if "multicast ff00::/8" in routes:
                return
            if time.monotonic() > deadline:
                # Not fatal: traffic still works, only the first packet may be late.
                log.warning("IPv6 on %s in %s not ready after %.1f s", ifname, ns, timeout)
                return
            time.sleep(0.005)

    def _next_ifname(self, ns: Netns) -> str:
        n = self._ifcount.get(ns.name, 0)
        self._ifcount[ns.name] = n + 1
        return f"eth{n}"
