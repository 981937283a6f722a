"""A socket load for benchmarks: established loopback TCP connections held by
several worker processes, plus some UDP and Unix sockets.

Loopback only (127.0.0.0/8). Workers hold both ends of every connection and
exit when stdin closes; at teardown every TCP socket is closed with SO_LINGER 0
(a reset), so no TIME_WAIT sockets pile up between benchmark runs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from types import TracebackType

# One worker: listens on its own 127.0.0.x, connects to itself `pairs` times and
# keeps both ends, plus `extra` UDP sockets and `extra` unix socketpairs.
WORKER = r"""
import os, resource, socket, struct, sys
index, pairs, extra = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
host = f"127.0.{index // 200 + 1}.{index % 200 + 1}"
lst = socket.socket()
lst.bind((host, 0))
lst.listen(4096)
held = []
for _ in range(pairs):
    c = socket.create_connection(lst.getsockname())
    a, _ = lst.accept()
    held += [c, a]
for _ in range(extra):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((host, 0))
    held.append(u)
    held.extend(socket.socketpair())
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
linger = struct.pack("ii", 1, 0)
for s in held:
    if s.type == socket.SOCK_STREAM and s.family == socket.AF_INET:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.close()
"""


class Load:
    """``with Load(tcp_sockets=20000, workers=8) as load:`` — the load exists inside."""

    def __init__(self, tcp_sockets: int = 20000, workers: int = 8, extra: int = 300) -> None:
        self.tcp_sockets = tcp_sockets
        self.workers = workers
        self.extra = extra
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Load:
        pairs = self.tcp_sockets // 2
        try:
            for i in range(self.workers):
                share = pairs // self.workers + (1 if i < pairs % self.workers else 0)
                extra = self.extra // self.workers
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", WORKER, str(i), str(share), str(extra)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            for proc in self.procs:
                assert proc.stdout is not None
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("a load worker failed to start")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        deadline = time.monotonic() + 30
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def established_tcp() -> int:
    """Count established TCP sockets with ss (an independent witness)."""
    out = subprocess.run(["ss", "-Htan", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    return out.count("\n")
