"""A socket load for benchmarks: established loopback TCP connections held by
several worker processes, plus some UDP and Unix sockets.

Loopback only (127.0.0.0/8). Workers hold both ends of every connection and
exit when their stdin closes (so they also go when the benchmark dies, however
it dies). Every TCP socket gets SO_LINGER 0 as soon as it exists, so any close
(an orderly exit, SIGTERM, even SIGKILL) is a reset: no TIME_WAIT sockets pile
up between benchmark runs.

    with Load(n_sockets=20000, workers=8) as load:
        ...  # load.counts says what the workers hold, load.seen what ss saw

Run alone (``python bench/load.py [--sockets N]``) it builds the load, prints
the counts and holds it until Ctrl-C, for poking at it with other tools.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

# One worker: listens on its own 127.0.1.x (listeners apart, so a worker never
# accepts another's connection), connects to itself `pairs` times and keeps both
# ends, plus `udp` UDP sockets and `unix` unix socketpairs. Each process needs
# an fd per socket: it raises its soft limit to the hard limit (or past it where
# the kernel lets us: root with CAP_SYS_RESOURCE) and otherwise says so: this
# VM's root lacks that capability and caps the hard limit at 20000, hence the
# load is spread over processes.
WORKER = r"""
import json, resource, signal, socket, struct, sys
index, pairs, n_udp, n_unix = (int(a) for a in sys.argv[1:5])
# Ctrl-C reaches the whole foreground process group; the benchmark tears us down.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
need = 2 * pairs + n_udp + 2 * n_unix + 64  # 64: stdio, the listener, the interpreter's own
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if need > soft:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, hard), max(need, hard)))
    except (ValueError, OSError):
        sys.exit(f"load worker {index}: needs {need} fds, the hard limit is {hard}: use more workers")
host = f"127.0.{index // 200 + 1}.{index % 200 + 1}"
linger = struct.pack("ii", 1, 0)
lst = socket.socket()
lst.bind((host, 0))
lst.listen(4096)
held = []
for _ in range(pairs):
    c = socket.create_connection(lst.getsockname())
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    a, _ = lst.accept()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    held += [c, a]
for _ in range(n_udp):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((host, 0))
    held.append(u)
for _ in range(n_unix):
    held.extend(socket.socketpair())
print(json.dumps({"tcp": 2 * pairs, "udp": n_udp, "unix": 2 * n_unix,
                  "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "host": host}), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
"""

KINDS = ("tcp", "udp", "unix")
# ss -p's process column: users:(("python",pid=123,fd=4),...)
_PID = re.compile(r"pid=(\d+)")


def _share(total: int, parts: int, i: int) -> int:
    """Worker i's share of `total` split as evenly as whole numbers allow."""
    return total // parts + (1 if i < total % parts else 0)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold off SIGINT/SIGTERM/SIGHUP so a second Ctrl-C cannot cut a teardown short."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Load:
    """``with Load(n_sockets=20000, workers=8) as load:`` — the load exists inside.

    n_sockets: established TCP sockets (both ends count, so n_sockets/2 connections);
    udp: bound UDP sockets; unix: unix socketpairs (2 sockets each). On entry the
    load is checked with ``ss -p`` (see ``seen``); a shortfall raises RuntimeError.
    ``owners_witness=False`` checks only the count of established TCP sockets
    (``ss -tan``, no ``-p``): ss's owner lookup takes minutes at a million sockets.
    """

    def __init__(self, n_sockets: int = 20000, workers: int = 8, udp: int = 300, unix: int = 300,
                 verify: bool = True, owners_witness: bool = True) -> None:
        if n_sockets < 0 or n_sockets % 2:
            raise ValueError("n_sockets must be even: each connection has two ends")
        if workers < 1 or workers > 200 * 254:
            raise ValueError("workers: 1 to 50800 (one 127.x.y.z address each)")
        self.n_sockets = n_sockets
        self.workers = workers
        self.udp = udp
        self.unix = unix
        self.verify = verify
        self.owners_witness = owners_witness
        self.procs: list[subprocess.Popen[str]] = []
        self.reports: list[dict[str, int | str]] = []
        self.seen: dict[str, int] = {}
        self.build_seconds = 0.0

    def __enter__(self) -> Load:
        pairs = self.n_sockets // 2
        start = time.perf_counter()
        try:
            for i in range(self.workers):
                argv = [str(i), str(_share(pairs, self.workers, i)),
                        str(_share(self.udp, self.workers, i)), str(_share(self.unix, self.workers, i))]
                self.procs.append(subprocess.Popen([sys.executable, "-c", WORKER, *argv],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for proc in self.procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"load worker {proc.pid} failed to start (exit {proc.wait()})")
                self.reports.append(json.loads(line))
            self.build_seconds = time.perf_counter() - start
            if self.verify and not self.owners_witness:
                self.seen = {"tcp": established_tcp(), "udp": self.counts["udp"],
                             "unix": self.counts["unix"]}
                if self.seen["tcp"] < self.counts["tcp"]:
                    raise RuntimeError(f"load not in place: ss -tan sees {self.seen['tcp']} "
                                       f"established TCP sockets of {self.counts['tcp']}")
            elif self.verify:
                self.seen = owned_sockets(self.pids)
                short = {k: (self.seen[k], n) for k, n in self.counts.items() if self.seen[k] < n}
                if short:
                    raise RuntimeError("load not in place; ss sees (found, expected): "
                                       + ", ".join(f"{k} {v}" for k, v in short.items()))
        except BaseException:
            self.close()
            raise
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    @property
    def counts(self) -> dict[str, int]:
        """Sockets the workers say they hold, by kind (tcp: established, both ends)."""
        return {k: sum(int(r[k]) for r in self.reports) for k in KINDS}

    def close(self) -> None:
        """Stop every worker: EOF first, SIGTERM after 20 s, SIGKILL after 5 more."""
        with _signals_held():
            for proc in self.procs:
                if proc.stdin is not None and not proc.stdin.closed:
                    try:
                        proc.stdin.close()
                    except OSError:  # the worker already died: its pipe is broken
                        pass
            deadline = time.monotonic() + 20
            for proc in self.procs:
                for stop in (proc.terminate, proc.kill):
                    try:
                        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                        break
                    except subprocess.TimeoutExpired:
                        stop()
                        deadline = time.monotonic() + 5
                else:
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            self.procs = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def owned_sockets(pids: list[int]) -> dict[str, int]:
    """Sockets ss attributes to these processes: established TCP, UDP, Unix.

    An independent witness that the load is there and that ss sees its owners
    (one ``ss -tuxanp`` call: a single walk of /proc).
    """
    wanted = {str(p) for p in pids}
    out = subprocess.run(["ss", "-H", "-tuxanp"], capture_output=True, text=True, check=True).stdout
    seen = dict.fromkeys(KINDS, 0)
    for line in out.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3 or not wanted.intersection(_PID.findall(fields[2])):
            continue
        netid, state = fields[0], fields[1]
        if netid == "tcp" and state == "ESTAB":
            seen["tcp"] += 1
        elif netid == "udp":
            seen["udp"] += 1
        elif netid.startswith("u_"):
            seen["unix"] += 1
    return seen


def _ss_count(*args: str) -> int:
    out = subprocess.run(["ss", "-H", *args], capture_output=True, text=True, check=True).stdout
    return out.count("\n")


def established_tcp() -> int:
    """Established TCP sockets on the host, counted by ss (an independent witness)."""
    return _ss_count("-tan", "state", "established")


def time_wait_tcp() -> int:
    """TCP sockets in TIME_WAIT on the host (what a careless teardown leaves behind)."""
    return _ss_count("-tan", "state", "time-wait")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the benchmark load and hold it until Ctrl-C.")
    parser.add_argument("--sockets", type=int, default=20000, help="established TCP sockets (even)")
    parser.add_argument("--workers", type=int, default=8, help="processes holding them (default 8)")
    parser.add_argument("--udp", type=int, default=300, help="UDP sockets (default 300)")
    parser.add_argument("--unix", type=int, default=300, help="Unix socket pairs (default 300)")
    args = parser.parse_args()
    # Holding until a signal is this tool's whole job, so Ctrl-C must work even where the
    # shell started us with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    try:
        with Load(args.sockets, args.workers, args.udp, args.unix) as load:
            print(f"load: workers hold {load.counts} (built in {load.build_seconds:.1f} s); "
                  f"ss -tuxanp sees {load.seen} owned by them; pids {' '.join(map(str, load.pids))}")
            print("holding; Ctrl-C to tear down", flush=True)
            signal.pause()
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # the builder's own diagnosis; the workers are already gone
        print(f"bench/load.py: {exc}", file=sys.stderr)
        return 1
    print(f"torn down; {time_wait_tcp()} TCP sockets in TIME_WAIT on the host")
    return 0


if __name__ == "__main__":
    import sandbox  # bench/: no packet of a benchmark leaves the host

    sandbox.enter()
    raise SystemExit(main())
