"""Several worker processes over a range of queues (``--queue-balance A:B --workers N``).

The kernel spreads packets over the queues (NFQUEUE ``--queue-balance``, by flow,
or by CPU with ``--queue-cpu-fanout``); each forked worker binds its share of the
queues and runs the handler, so Python work runs on several cores. The parent owns
the firewall rules: it installs them only after every worker has bound its queues
and removes them before stopping the workers, the same order as `Divert`.

Stopping is bounded: a worker whose handler is stuck is interrupted (its packet gets
the default verdict), and one that has not reported within `STOP_GRACE` seconds is
killed (the kernel drops what its queues still held).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from sockscope.divert.engine import DivertStats
from sockscope.divert.firewall import clean_leftovers, install
from sockscope.divert.packet import DivertPacket
from sockscope.divert.rule import Rule, as_rule
from sockscope.divert.session import Divert, Handler
from sockscope.errors import SockscopeError, UsageError

if TYPE_CHECKING:
    from sockscope.capture.bpf import BpfProgram

STOP_SIGNAL = signal.SIGUSR1
STOP_GRACE = 3.0  # seconds a worker has to report after being told to stop


def split_queues(queues: list[int], workers: int) -> list[list[int]]:
    """Contiguous shares, as even as possible (each worker binds a range)."""
    if not 1 <= workers <= len(queues):
        raise UsageError(f"--workers must be 1..{len(queues)} (one queue at least per worker)")
    size, extra = divmod(len(queues), workers)
    out, start = [], 0
    for i in range(workers):
        end = start + size + (1 if i < extra else 0)
        out.append(queues[start:end])
        start = end
    return out


class Workers:
    """Run ``handler`` in ``workers`` processes over ``queues``; `run()` until `stop()`."""

    def __init__(
        self,
        rule: str | Rule,
        queues: list[int],
        workers: int,
        *,
        hooks: Iterable[str] | None = None,
        in_interface: str | None = None,
        out_interface: str | None = None,
        mark: str | int | None = None,
        bypass: bool = True,
        **options: Any,
    ) -> None:
        compiled = as_rule(rule, hooks, in_interface, out_interface, mark)
        assert compiled is not None
        self.rule = compiled
        self.queues = queues
        self.shares = split_queues(queues, workers)
        self.bypass = bypass
        self.options = options
        self.leftovers_removed: list[str] = []
        self.first_error: str | None = None
        self.exit_status: int | None = None  # a handler's sys.exit(N) in a worker
        self.killed = 0  # workers that did not report within STOP_GRACE
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    def run(
        self,
        handler: Handler,
        until: Callable[[], bool] | None = None,
        after: Callable[[DivertPacket], None] | None = None,
    ) -> DivertStats:
        """Fork the workers, install the rules once all are bound, wait for `stop()`,
        ``until()`` or a worker's death; returns the workers' counters summed."""
        children: dict[int, int] = {}  # pid -> read end of its pipe
        steering = None
        try:
            for share in self.shares:
                pid, fd = self._fork(share, handler, after)
                children[pid] = fd
            self._wait_ready(children)
            self.leftovers_removed = clean_leftovers()
            steering = install(self.rule, self.queues, bypass=self.bypass)
            while not self._stop and (until is None or not until()) and all(_alive(pid) for pid in children):
                time.sleep(0.1)
        finally:
            # Chains emptied, workers drain their queues and stop, then the tables go
            # (removing a hook drops whatever is still queued: see divert.firewall).
            try:
                if steering is not None:
                    steering.quiesce()
            finally:
                try:
                    results = self._collect(children)
                finally:
                    if steering is not None:
                        steering.remove()
        return results

    def _fork(
        self, share: list[int], handler: Handler, after: Callable[[DivertPacket], None] | None
    ) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            os.close(read_fd)
            code = 0
            try:
                code = _worker(write_fd, share, handler, after, self.options, self.rule.user_filter)
            finally:
                os._exit(code)
        os.close(write_fd)
        return pid, read_fd

    def _wait_ready(self, children: dict[int, int]) -> None:
        deadline = time.monotonic() + 15
        waiting = dict(children)
        while waiting:
            ready, _, _ = select.select(list(waiting.values()), [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise SockscopeError("divert workers did not bind their queues in 15 s")
            for pid, fd in list(waiting.items()):
                if fd in ready:
                    line = _read_line(fd)
                    if line != "ready":
                        raise SockscopeError(line.removeprefix("error ") or "a divert worker died")
                    del waiting[pid]

    def _collect(self, children: dict[int, int]) -> DivertStats:
        """Stop the workers and add up what they report; one that does not report
        within `STOP_GRACE` seconds is killed."""
        total = DivertStats()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, STOP_SIGNAL)
        texts = _read_all(children, time.monotonic() + STOP_GRACE)
        for pid in children:
            if texts.get(pid) is None:
                self.killed += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # already reaped by _alive
                os.waitpid(pid, 0)
        for text in texts.values():
            for line in (text or "").splitlines():
                if line.startswith("stats "):
                    self._add(total, json.loads(line[6:]))
        return total

    def _add(self, total: DivertStats, data: dict[str, Any]) -> None:
        for key, value in data["stats"].items():
            if hasattr(total, key) and key not in ("queue_dropped", "user_dropped"):
                setattr(total, key, getattr(total, key) + value)
        total.kernel += [_queue_stats(q) for q in data["kernel"]]
        if data["error"] and self.first_error is None:
            self.first_error = data["error"]
        if data.get("exit") is not None and self.exit_status is None:
            self.exit_status = data["exit"]


def _worker(
    fd: int,
    share: list[int],
    handler: Handler,
    after: Callable[[DivertPacket], None] | None,
    options: dict[str, Any],
    user_filter: BpfProgram | None,
) -> int:
    out = os.fdopen(fd, "w", buffering=1)
    session = Divert(None, share[0], queue_balance=(share[0], share[-1]), **options)
    session._user_filter = user_filter
    # Only the parent stops a worker (after removing the rules): terminal and group
    # signals are ignored, STOP_SIGNAL ends the loop (and a stuck handler), and so
    # does the parent's death.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(STOP_SIGNAL, lambda s, f: session.interrupt())
    _die_with_parent()
    try:
        session.open()
    except SockscopeError as exc:
        out.write(f"error {exc}\n")
        return 1
    exit_status = None
    try:
        out.write("ready\n")
        session.run(handler, after=after)
    except SystemExit as exc:  # the handler's sys.exit(N): the parent ends the divert
        exit_status = exc.code if isinstance(exc.code, int) else 1
        os.kill(os.getppid(), signal.SIGTERM)
    finally:
        kernel = session.stats().kernel  # while the queues are still bound
        session.close()
        stats = session.stats()
        payload = {
            "stats": stats.to_dict(),
            "kernel": [dataclasses.asdict(q) for q in kernel],
            "error": session.last_error,
            "exit": exit_status,
        }
        out.write("stats " + json.dumps(payload) + "\n")
        out.close()
    return 0


def _die_with_parent() -> None:
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(STOP_SIGNAL), 0, 0, 0)


def _queue_stats(data: dict[str, Any]) -> Any:
    from sockscope.netlink.nfqueue import QueueStats

    return QueueStats(**data)


def _read_all(children: dict[int, int], deadline: float) -> dict[int, str | None]:
    """Everything each child writes until it closes its pipe; None for a child still
    writing at ``deadline``. The pipes are closed either way."""
    buffers = {fd: b"" for fd in children.values()}
    open_fds = set(buffers)
    try:
        while open_fds and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(open_fds), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if chunk:
                    buffers[fd] += chunk
                else:
                    open_fds.discard(fd)
    finally:
        for fd in buffers:
            os.close(fd)
    return {
        pid: None if fd in open_fds else buffers[fd].decode(errors="replace") for pid, fd in children.items()
    }


def _read_line(fd: int) -> str:
    chunks = b""
    while not chunks.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        chunks += chunk
    return chunks.decode().strip()


def _alive(pid: int) -> bool:
    done, _ = os.waitpid(pid, os.WNOHANG)
    return done == 0
