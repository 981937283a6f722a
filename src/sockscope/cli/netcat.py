"""What ``connect`` and ``listen`` share: nc's relay options, the standard streams
in whatever state the shell left them, and ending on a signal with its status."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING

from .argtypes import seconds

if TYPE_CHECKING:
    from sockscope.services.relay import RelayOptions

# Signals that end a run: the cleanup runs, and the exit status is 128 + the signal.
END_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)


def add_relay_arguments(p: argparse.ArgumentParser, *, listen: bool) -> None:
    """nc's options for the relay (both commands) and the address family."""
    p.add_argument("-N", "--shutdown", action="store_true",
                   help="at the end of the input, shut down the socket's write side so the peer sees "
                        "its end of file (without -N, as nc, the peer sees it when the connection closes)")
    p.add_argument("-d", "--detach", action="store_true",
                   help="do not read standard input (so never an end of file to pass on)")
    p.add_argument("-C", "--crlf", action="store_true", help="send line ends as CRLF")
    wait_help = "end after SECONDS with nothing received or sent"
    if not listen:
        wait_help = "give up connecting, or end, after SECONDS with nothing received or sent (connecting " \
                    "gives up after 10 s without -w)"
    p.add_argument("-w", "--wait", type=seconds, metavar="SECONDS", help=wait_help)
    family = p.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, help="IPv4 only")
    family.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="IPv6 only")


def relay_options(args: argparse.Namespace, *, listener: bool, linger: float = 0.0) -> RelayOptions:
    from sockscope.services.relay import RelayOptions

    return RelayOptions(shutdown=args.shutdown, idle=args.wait, listener=listener, crlf=args.crlf,
                        linger=linger)


def standard_streams() -> tuple[int | None, int | None]:
    """(input fd, output fd), None for one the shell closed (``<&-``, ``>&-``).

    A closed descriptor 0, 1 or 2 is filled with /dev/null first, so no socket
    opened later takes its number (nc's socket then becomes its own standard
    input, and a child's stderr would write into a client's connection)."""
    kept: list[int | None] = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            kept.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # a lower one was free too: filled by the loop's earlier turn
                os.dup2(null, fd)
                os.close(null)
            kept.append(None)
    return kept[0], kept[1]


class Stopped(BaseException):
    """A signal ended the run (BaseException: no `except Exception` in between holds it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalGate:
    """Where the signals of END_SIGNALS take effect: at once, except inside `held`
    (a step that must not be cut in two, such as starting a child and recording
    it), after which a signal that came meanwhile ends the run."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._holding = False

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.received:
            return  # already ending: let the cleanup finish
        self.received.append(signum)
        if not self._holding:
            raise Stopped(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self.received:
            raise Stopped(self.received[0])


def run_until_signal(body: Callable[[SignalGate], int], cleanup: Callable[[int], None]) -> int:
    """body(gate)'s status, or 128 + the signal that ended it. ``cleanup(signum)``
    runs either way (signum 0 without a signal); a second signal cannot cut it short."""
    gate = SignalGate()
    for sig in END_SIGNALS:
        signal.signal(sig, gate.handler)
    try:
        return body(gate)
    except Stopped as stop:
        return 128 + stop.signum
    finally:
        if not gate.received:
            gate.received.append(0)  # from here on a signal only waits for the cleanup
        cleanup(gate.received[0])
