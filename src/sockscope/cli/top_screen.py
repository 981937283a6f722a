"""The live view of ``sockscope top``, in curses.

curses rather than Rich or Textual (measured, README "sockscope top"): it is in
the standard library, imports in 3 ms (Rich's table 80 ms, Textual 210 ms),
reads keys and resize events itself (Rich has no key input), and restores the
terminal on every way out (``curses.wrapper``; Ctrl-C and SIGTERM unwind
through it). Keys: q quit, p pause, m (or 1/2/3) processes / connections /
remote hosts, s sort column, / filter (ss language), h help.
"""

from __future__ import annotations

import curses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sockscope.errors import UsageError
from sockscope.traffic import Traffic, TrafficSample

from . import output
from .top import (
    CONNECTION_HEADERS,
    PROCESS_HEADERS,
    PROCESS_RIGHT,
    REMOTE_HEADERS,
    Totals,
    connection_rows,
    process_rows,
    rate_text,
    remote_rows,
)

MODES = ("processes", "connections", "remotes")
SORTS = ("total rate", "sent/s", "recv/s")
HELP = "q quit  p pause  m/1/2/3 view  s sort  / filter  h help"
_HEADERS = {"processes": PROCESS_HEADERS, "connections": CONNECTION_HEADERS, "remotes": REMOTE_HEADERS}
_RIGHT = {"processes": PROCESS_RIGHT, "connections": (4, 5, 6, 7), "remotes": (2, 3, 4, 5, 6)}
_ROWS: dict[str, Callable[[TrafficSample, Totals], list[tuple[str, ...]]]] = {
    "processes": process_rows, "connections": connection_rows, "remotes": remote_rows}


@dataclass
class ScreenState:
    mode: str = "processes"
    sort: str = "total rate"
    paused: bool = False
    filter_text: str = ""
    message: str = ""
    show_help: bool = False
    sample: TrafficSample | None = None
    totals: Totals = field(default_factory=Totals)


def run_screen(traffic: Traffic, filter_text: str) -> None:
    state = ScreenState(filter_text=filter_text)
    curses.wrapper(_loop, traffic, state)


def _loop(screen: Any, traffic: Traffic, state: ScreenState) -> None:
    curses.curs_set(0)
    screen.timeout(100)  # getch waits at most this long: keys stay responsive
    deadline = time.monotonic() + traffic.interval
    _draw(screen, state)
    while True:
        key = screen.getch()
        if key != -1:
            if _on_key(screen, key, traffic, state) is False:
                return
            _draw(screen, state)
        if time.monotonic() >= deadline:
            deadline += traffic.interval
            if deadline < time.monotonic():
                deadline = time.monotonic() + traffic.interval
            sample = traffic.sampler.collect()
            state.totals.add(sample)  # totals keep counting while paused
            if not state.paused:
                state.sample = sample
                _draw(screen, state)


def _on_key(screen: Any, key: int, traffic: Traffic, state: ScreenState) -> bool:
    """Handle one key; False to quit."""
    if key in (ord("q"), ord("Q")):
        return False
    if key == curses.KEY_RESIZE:
        curses.update_lines_cols()
        screen.clear()
    elif key == ord("p"):
        state.paused = not state.paused
    elif key == ord("m"):
        state.mode = MODES[(MODES.index(state.mode) + 1) % len(MODES)]
    elif key in (ord("1"), ord("2"), ord("3")):
        state.mode = MODES[key - ord("1")]
    elif key == ord("s"):
        state.sort = SORTS[(SORTS.index(state.sort) + 1) % len(SORTS)]
    elif key in (ord("h"), ord("?")):
        state.show_help = not state.show_help
    elif key == ord("/"):
        text = _prompt(screen, "filter (ss syntax, empty for none): ", state.filter_text)
        if text is not None:
            try:
                traffic.sampler.set_filter(text or None)
            except UsageError as exc:
                state.message = f"filter not applied: {exc}"
            else:
                state.filter_text = text
                state.message = ""
    return True


def _prompt(screen: Any, label: str, initial: str) -> str | None:
    """A one-line editor on the last line; None when Escape cancels it."""
    text = initial
    screen.timeout(-1)
    try:
        while True:
            height, width = screen.getmaxyx()
            _put(screen, height - 1, 0, (label + text)[-(width - 1):], width, curses.A_REVERSE)
            screen.refresh()
            key = screen.get_wch()
            if key in ("\n", "\r", curses.KEY_ENTER):
                return text
            if key == "\x1b":
                return None
            if key in ("\x7f", "\b", curses.KEY_BACKSPACE):
                text = text[:-1]
            elif key == curses.KEY_RESIZE:
                curses.update_lines_cols()
                screen.clear()
            elif isinstance(key, str) and key.isprintable():
                text += key
    finally:
        screen.timeout(100)


def _sorted_sample(sample: TrafficSample, sort: str) -> TrafficSample:
    def key(row: Any) -> float:
        if sort == "sent/s":
            return -float(row.tx_rate)
        if sort == "recv/s":
            return -float(row.rx_rate)
        return -float(row.tx_rate + row.rx_rate)

    return TrafficSample(sample.time, sample.interval, sample.source,
                         sorted(sample.processes, key=key), sorted(sample.connections, key=key),
                         sorted(sample.remotes, key=key), sample.notes)


def _draw(screen: Any, state: ScreenState) -> None:
    screen.erase()
    height, width = screen.getmaxyx()
    sample = state.sample
    if sample is None:
        head = "sockscope top: measuring..."
    else:
        tx = sum(p.tx_rate for p in sample.processes)
        rx = sum(p.rx_rate for p in sample.processes)
        head = (f"sockscope top  {time.strftime('%H:%M:%S', time.localtime(sample.time))}  "
                f"{state.mode}  sent {rate_text(tx)}  recv {rate_text(rx)}  "
                f"sort: {state.sort}  source: {sample.source}")
    if state.paused:
        head += "  [paused]"
    _put(screen, 0, 0, head, width, curses.A_BOLD)
    line = 1
    if state.filter_text:
        _put(screen, line, 0, f"filter: {state.filter_text}", width)
        line += 1
    if state.show_help:
        for text in _help_lines():
            _put(screen, line, 0, text, width)
            line += 1
    if sample is not None:
        shown = _sorted_sample(sample, state.sort)
        rows = _ROWS[state.mode](shown, state.totals)
        table = output.table(_HEADERS[state.mode], rows, right=_RIGHT[state.mode]).splitlines()
        for i, text in enumerate(table):
            if line >= height - 1:
                break
            _put(screen, line, 0, text, width, curses.A_REVERSE if i == 0 else curses.A_NORMAL)
            line += 1
        for note in sample.notes:
            if line < height - 1:
                _put(screen, line, 0, note, width)
                line += 1
    _put(screen, height - 1, 0, state.message or HELP, width, curses.A_REVERSE)
    screen.refresh()


def _help_lines() -> Sequence[str]:
    return (
        "q quit (also Ctrl-C)   p pause/resume the display (counting goes on)",
        "m next view, 1 processes, 2 connections, 3 remote hosts   s next sort column",
        "/ filter sockets with an ss expression, e.g. 'dport = :443' (Enter applies, Esc cancels)",
        "Sent/Recv: payload bytes since top started; rates over the last interval",
    )


def _put(screen: Any, y: int, x: int, text: str, width: int, attr: int = curses.A_NORMAL) -> None:
    """Write within the screen: curses raises when the last cell is written."""
    if y < 0 or width <= 1:
        return
    try:
        screen.addnstr(y, x, text, width - 1, attr)
    except curses.error:
        pass
