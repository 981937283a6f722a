"""`divert()`: the rules and the engine together, as a context manager.

    with sockscope.divert("udp and dst port 5000", queue=0) as d:
        for pkt in d:
            if pkt[UDP].payload.startswith(b"x"):
                pkt.drop()
            else:
                pkt.accept()

Order matters for never black-holing traffic: the queue is bound before the rules
go in, and the rules come out before the queue is released, so a packet is only
ever steered to a queue someone reads. Packets left undecided get the default
verdict after ``timeout`` — also when the caller's own code stalls, through a
watchdog thread. The rules belong to the process (`divert.firewall`): however it
ends, SIGTERM and SIGKILL included, the kernel removes them with it, and with
``bypass`` (the default) a packet that meets the queue in the moment between passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import select
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sockscope.divert.engine import DivertStats, Engine
from sockscope.divert.firewall import Steering, clean_leftovers, install
from sockscope.divert.packet import DivertPacket, Verdict
from sockscope.divert.rule import Rule, as_rule
from sockscope.errors import UsageError

if TYPE_CHECKING:
    from sockscope.capture.bpf import BpfProgram

Handler = Callable[[DivertPacket], Any]


class HandlerInterrupted(BaseException):
    """Raised inside a running handler by `Divert.interrupt` (from a signal handler).
    A BaseException, so that a handler's ``except Exception`` does not swallow it."""


def queue_range(queue: int = 0, balance: str | tuple[int, int] | None = None) -> list[int]:
    """The queues to bind: ``queue`` alone or the inclusive range ``"A:B"``."""
    if balance is None:
        first, last = queue, queue
    elif isinstance(balance, str):
        try:
            first, last = (int(x) for x in balance.split(":"))
        except ValueError:
            raise UsageError(f"bad --queue-balance {balance!r}: want A:B, e.g. 0:3") from None
    else:
        first, last = balance
    if not 0 <= first <= last <= 0xFFFF:
        raise UsageError(f"bad queue range {first}:{last}: queues are 0..65535, first <= last")
    return list(range(first, last + 1))


class Divert:
    """Divert the packets ``rule`` matches to ``queues`` until closed.

    ``rule``: a tcpdump filter ("" for every packet) on ``hooks`` (default input and
    output), ``in_interface``/``out_interface`` and ``mark`` (see `compile_rule`), or
    a compiled `Rule`; None installs no firewall rule (steer packets with your own).
    ``bypass`` (default on): packets pass while no program is bound to the queue
    (NFQUEUE's --queue-bypass), so the moment between the queue's release and the
    rules' removal never drops. ``fail_open``: when the queue is full, packets pass
    instead of being dropped. ``default``/``timeout``: the verdict an undecided
    packet gets and when. ``rcvbuf``: the netlink socket's receive buffer (bytes;
    when it is full the kernel drops packets, counted as ENOBUFS and user_dropped).
    """

    def __init__(
        self,
        rule: str | Rule | None,
        queue: int = 0,
        *,
        hooks: Iterable[str] | None = None,
        in_interface: str | None = None,
        out_interface: str | None = None,
        mark: str | int | None = None,
        queue_balance: str | tuple[int, int] | None = None,
        bypass: bool = True,
        fail_open: bool = False,
        gso: bool = False,
        conntrack: bool = False,
        uid_gid: bool = False,
        copy_range: int = 0xFFFF,
        maxlen: int = 32768,
        default: Verdict = Verdict.ACCEPT,
        timeout: float = 1.0,
        batch: int = 256,
        rcvbuf: int = 64 << 20,
        watchdog: bool = True,
    ) -> None:
        self.rule = as_rule(rule, hooks, in_interface, out_interface, mark)
        self.queues = queue_range(queue, queue_balance)
        if not 0 < timeout < math.inf:
            raise UsageError(
                "--timeout must be a positive number of seconds: undecided packets need a default verdict"
            )
        self.bypass = bypass
        self._engine_args: dict[str, Any] = dict(
            copy_range=copy_range,
            maxlen=maxlen,
            fail_open=fail_open,
            gso=gso,
            conntrack=conntrack,
            uid_gid=uid_gid,
            default=default,
            timeout=timeout,
            batch=batch,
            rcvbuf=rcvbuf,
        )
        self.leftovers_removed: list[str] = []
        self.engine: Engine | None = None
        self._steering: Steering | None = None
        self._watchdog = watchdog
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        self._in_handler = False
        self._after_error: BaseException | None = None
        self._user_filter: BpfProgram | None = None  # a worker's: the parent holds the rule
        self.last_error: str | None = None

    @property
    def notes(self) -> list[str]:
        """What to know about how the rule is matched (a filter too long for the kernel)."""
        return self.rule.notes if self.rule is not None else []

    # -- lifecycle ------------------------------------------------------------------
    def open(self) -> Divert:
        user_filter = self.rule.user_filter if self.rule is not None else self._user_filter
        self.engine = Engine(self.queues, user_filter=user_filter, **self._engine_args)
        try:
            if self.rule is not None:
                self.leftovers_removed = clean_leftovers()
                self._steering = install(self.rule, self.queues, bypass=self.bypass)
        except BaseException:
            self.engine.close()
            self.engine = None
            raise
        if self._watchdog:
            self._thread = threading.Thread(target=self._watch, name="sockscope-divert-watchdog", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Rules emptied first, then the default verdict for everything still queued,
        then the tables removed and the queue released (see `divert.firewall` for why
        in that order). Every step is tried; the first error is raised at the end.
        Idempotent and safe from another thread (a deadline after a signal)."""
        self._stop.set()
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            steering, engine = self._steering, self.engine
            errors: list[Exception] = []
            steps = (
                steering.quiesce if steering is not None else None,
                self._join_watchdog,
                engine.drain if engine is not None else None,
                steering.remove if steering is not None else None,
            )
            try:
                for step in steps:
                    if step is not None:
                        try:
                            step()
                        except Exception as exc:
                            errors.append(exc)
            finally:
                if engine is not None:
                    engine.close()
            if errors:
                raise errors[0]

    def _join_watchdog(self) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> Divert:
        return self.open()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def tables(self) -> list[str]:
        """The nft tables holding the steering rules ("ip sockscope_divert_0_...")."""
        return self._steering.tables if self._steering is not None else []

    def _watch(self) -> None:
        # Expires forgotten packets while the caller's code is busy elsewhere, and when
        # the caller has stopped receiving altogether (a handler stuck for longer than
        # the timeout) takes the waiting packets too, so they expire instead of piling
        # up in the kernel. The engine lock makes it safe beside the caller.
        engine = self.engine
        assert engine is not None
        period = min(0.1, engine.timeout / 4)
        while not self._stop.wait(period):
            try:
                if time.monotonic() - engine.last_receive > engine.timeout:
                    for _ in range(64):  # bounded: the caller may come back meanwhile
                        if not engine.receive(watchdog=True):
                            break
                engine.expire()
            except OSError:
                return  # the socket closed under us: the session is ending

    # -- the packets ----------------------------------------------------------------
    def _require(self) -> Engine:
        if self.engine is None:
            raise UsageError("divert is not open: use it as a context manager")
        return self.engine

    def __iter__(self) -> Iterator[DivertPacket]:
        engine = self._require()
        while not self._stop.is_set():
            packets = engine.receive()
            if not packets:
                engine.flush()
                self._wait(engine)
                continue
            yield from packets
            engine.flush()

    def _wait(self, engine: Engine) -> None:
        expiry = engine.next_expiry()
        wait = 0.2 if expiry is None else max(0.0, min(0.2, expiry - time.monotonic()))
        if engine.pending:
            wait = min(wait, 0.02)  # packets decided later (held ones) go out soon
        wait = min(wait, engine.timeout / 2)
        engine.last_receive = time.monotonic()  # idle, not stalled: the watchdog keeps off
        with contextlib.suppress(InterruptedError):
            select.select([engine], [], [], wait)
        engine.expire()

    def run(
        self,
        handler: Handler,
        until: Callable[[], bool] | None = None,
        after: Callable[[DivertPacket], None] | None = None,
    ) -> None:
        """Give each packet to ``handler`` (see `apply_result`) until ``until()`` is true
        or the session stops. A handler that raises: the default verdict, counted.
        ``after(pkt)`` sees each packet once its verdict is settled (e.g. to print it)."""
        engine = self._require()
        if after is not None:
            engine.on_settled = self._reporter(after)
        try:
            while not self._stop.is_set() and (until is None or not until()):
                packets = engine.receive()
                if not packets:
                    engine.flush()
                    self._wait(engine)
                    continue
                for pkt in packets:
                    self.handle(pkt, handler)
                    if self._stop.is_set():
                        break  # the rest get the default verdict at close
                engine.flush()
        finally:
            if self._after_error is not None:
                raise self._after_error

    def _reporter(self, after: Callable[[DivertPacket], None]) -> Callable[[DivertPacket], None]:
        """``after`` as the engine calls it (from the loop, the watchdog or close): its
        first error stops the session and is raised by `run`, never lost in a thread."""

        def report(pkt: DivertPacket) -> None:
            if self._after_error is not None:
                return
            try:
                after(pkt)
            except BaseException as exc:  # e.g. stdout into a closed pipe
                self._after_error = exc
                self.stop()

        return report

    def handle(self, pkt: DivertPacket, handler: Handler) -> None:
        """Give ``pkt`` to ``handler``; an error or `interrupt` means the default verdict."""
        engine = self._require()
        try:
            self._in_handler = True
            try:
                result = handler(pkt)
            finally:
                self._in_handler = False
            apply_result(pkt, result)
        except HandlerInterrupted:
            self._stop.set()
        except Exception as exc:
            engine.stats.handler_errors += 1
            if self.last_error is None:  # the first one: later ones are usually the same
                self.last_error = f"{type(exc).__name__}: {exc}"
        if pkt.verdict is None:
            pkt._decide(engine.default)

    def stop(self) -> None:
        """Make iteration / `run` return (safe from a signal handler or another thread)."""
        self._stop.set()

    def interrupt(self) -> None:
        """`stop`, and end a handler that is running now (`run`'s) with
        HandlerInterrupted: its packet gets the default verdict. For signal handlers,
        which Python runs in the main thread, where `run` calls the handler."""
        self._stop.set()
        if self._in_handler and threading.current_thread() is threading.main_thread():
            raise HandlerInterrupted

    def stats(self) -> DivertStats:
        """The counters, with every verdict given so far sent and counted."""
        engine = self._require()
        if not self._closed:
            engine.flush()
        return engine.snapshot()

    # -- asyncio ----------------------------------------------------------------------
    async def __aenter__(self) -> Divert:
        await asyncio.get_running_loop().run_in_executor(None, self.open)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def packets(self) -> AsyncIterator[DivertPacket]:
        """``async for pkt in d.packets()``: waits on the socket with the event loop."""
        engine = self._require()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(engine.fileno(), ready.set)
        try:
            while not self._stop.is_set():
                packets = engine.receive()
                if not packets:
                    engine.flush()
                    ready.clear()
                    expiry = engine.next_expiry()
                    wait = 0.2 if expiry is None else max(0.0, min(0.2, expiry - time.monotonic()))
                    wait = min(0.02 if engine.pending else wait, engine.timeout / 2)
                    engine.last_receive = time.monotonic()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ready.wait(), wait)
                    engine.expire()
                    continue
                for pkt in packets:
                    yield pkt
                engine.flush()
        finally:
            loop.remove_reader(engine.fileno())


def apply_result(pkt: DivertPacket, result: Any) -> None:
    """What a handler's return value means: a `Verdict` or "accept"/"drop"/"repeat";
    bytes: a new payload (checksums recomputed), accepted; None: whatever the handler
    decided through the packet, else the default verdict."""
    if result is None:
        return
    if isinstance(result, bytes | bytearray | memoryview):
        pkt.set_payload(bytes(result))
        result = Verdict.ACCEPT
    if isinstance(result, str):
        try:
            result = Verdict[result.upper()]
        except KeyError:
            raise UsageError(
                f"handler returned {result!r}: want accept, drop, repeat, bytes or None"
            ) from None
    if not isinstance(result, Verdict):
        raise UsageError(
            f"handler returned {type(result).__name__}: want accept, drop, repeat, bytes or None"
        )
    if pkt.verdict is None:
        pkt._decide(result)


def divert(rule: str | Rule | None, queue: int = 0, **options: Any) -> Divert:
    """A `Divert` to use with ``with`` (or ``async with``); see `Divert` for options."""
    return Divert(rule, queue, **options)
