"""How a ``sockscope divert`` run ends and what it reports: the stop signals and
their deadline, ``--print``/``--jsonl`` lines of settled packets, ``--count``, and the
counters on stderr."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import output, stdout

STOP_GRACE = 3.0  # seconds a handler has to return after the first stop signal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopper:
    """The stop signals: each asks the session (or workers) to stop and interrupts a
    running handler; the first also starts a deadline after which the run ends
    without the handler (rules removed, verdicts given, counters printed)."""

    def __init__(self) -> None:
        self.session: Any = None
        self.workers: Any = None
        self.armed = False
        self.report: Callable[[], None] | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._done = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for s, h in self._previous.items():
            signal.signal(s, h)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.workers is not None:
            self.workers.stop()
            return
        if self.session is None:
            return
        if self._timer is None and self.armed:
            self._timer = threading.Timer(STOP_GRACE, self._deadline)
            self._timer.daemon = True
            self._timer.start()
        self.session.interrupt()  # raises into a running handler, nowhere else

    def _deadline(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            try:
                self.session.close()
            finally:
                sys.stderr.write(
                    f"sockscope divert: the handler did not return within {STOP_GRACE:g} s of the "
                    "signal: rules removed, held packets given the default verdict\n"
                )
                report(self.session.stats(), self.session.last_error)
                sys.stderr.flush()
                os._exit(1)

    def finish(self) -> bool:
        """The main thread is done; False if the deadline got there first."""
        with self._lock:
            if self._done:
                return False
            self._done = True
        return True


class Counter:
    """--print, --count and how the run ended, fed each settled packet."""

    def __init__(self, args: argparse.Namespace, stop: Callable[[], None]) -> None:
        self.args = args
        self.stop = stop
        self.seen = 0
        self.exit_status: int | None = None
        self.output_error: Exception | None = None

    def settled(self, pkt: Any) -> None:
        self.seen += 1
        count = self.args.count
        if count is not None and self.seen > count:
            return  # in flight when the count was reached: given its verdict, not shown
        if self.args.print and self.output_error is None:
            try:
                show(pkt, self.args.jsonl)
            except (BrokenPipeError, stdout.WriteError) as exc:  # stop; the counters still go out
                self.output_error = exc
                self.stop()
        if self.seen == self.args.count:
            self.stop()

    def finish(self, stats: Any, error: str | None) -> int:
        report(stats, error)
        if self.exit_status is not None:
            sys.stderr.write(f"sockscope divert: the handler exited with status {self.exit_status}\n")
            return self.exit_status
        if self.output_error is not None:
            raise self.output_error  # | head: quietly; a full disk: one line (cli/main.py)
        return 0


def show(pkt: Any, jsonl: bool) -> None:
    verdict = pkt.verdict.name.lower() if pkt.verdict is not None else "pending"
    rewritten = pkt._new_payload is not None and verdict == "accept"
    if jsonl:
        info = pkt.info
        record = {
            "queue": pkt.queue,
            "id": pkt.id,
            "hook": pkt.hook,
            "in": info.in_interface or (str(info.indev) if info.indev is not None else None),
            "out": info.out_interface or (str(info.outdev) if info.outdev is not None else None),
            "mark": pkt.mark,
            "uid": info.uid,
            "gid": info.gid,
            "conntrack": info.ct_info,
            "length": info.wire_len,
            "summary": pkt.summary(),
            "verdict": verdict,
            "rewritten": rewritten,
        }
        line = output.dump_jsonl([record])
    else:
        line = (
            f"q{pkt.queue} {pkt.hook:<7} {pkt.summary()} -> {verdict}{' (rewritten)' if rewritten else ''}\n"
        )
    stdout.write(line)


def report(stats: Any, error: str | None) -> None:
    d = stats.to_dict()
    parts = [f"{d['received']} received", f"{d['accepted']} accepted", f"{d['dropped']} dropped"]
    for key, label in (
        ("modified", "rewritten"),
        ("repeated", "repeated"),
        ("expired", "given the default verdict"),
        ("handler_errors", "handler errors"),
        ("unmatched", "passed unseen (--rule checked in user space)"),
        ("enobufs", "lost: socket buffer full (ENOBUFS)"),
        ("queue_dropped", "lost: queue full"),
        ("user_dropped", "lost: not delivered"),
        ("verdict_errors", "verdicts refused"),
    ):
        if d[key]:
            parts.append(f"{d[key]} {label}")
    sys.stderr.write("sockscope divert: " + ", ".join(parts) + "\n")
    if error:
        sys.stderr.write(f"sockscope divert: first handler error: {error}\n")
