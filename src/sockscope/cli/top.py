"""``sockscope top``: traffic per process, per connection, per remote host.

A full-screen live view on a terminal (cli/top_screen.py, curses); ``--jsonl``
prints one JSON object per interval, ``--once`` one sample (a table, or JSON
with ``--jsonl``). Everything shown comes from ``sockscope.traffic``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from sockscope.errors import UsageError
from sockscope.traffic import Sampler, Traffic, TrafficSample
from sockscope.traffic.model import ConnectionTraffic, ProcessTraffic, RemoteTraffic

from . import output
from .argtypes import positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = ("sockscope top [-d SECONDS] [-N NETNS] [--pid PID] [--user USER] [--command NAME] "
               "[--source SOURCE] [--jsonl [--count N] | --once] [FILTER ...]")
    p.description = ("Traffic per process, per connection and per remote host, in every network "
                     "namespace (containers included), live. FILTER is an ss filter expression "
                     "over the sockets counted, e.g. 'dport = :443'.")
    p.add_argument("-d", "--interval", "--delay", dest="interval", type=positive_float, default=1.0,
                   metavar="SECONDS", help="seconds between samples (default 1)")
    p.add_argument("-N", "--netns", metavar="NAME|PATH|PID", action="append",
                   help="only this network namespace (repeatable; default: every one)")
    p.add_argument("--pid", type=int, action="append", metavar="PID", help="only this process")
    p.add_argument("--user", metavar="USER", help="only processes of this user")
    p.add_argument("--command", metavar="NAME", help="only processes with this command name")
    p.add_argument("--source", choices=("auto", "bpf", "capture", "counters"), default="auto",
                   help="where bytes come from: bpf (TCP counters and eBPF for UDP, ICMP, raw), "
                        "capture (TCP counters and a capture for UDP), counters (TCP only), "
                        "auto (bpf where it may run, else capture; the default)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per interval, no screen")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N samples")
    p.add_argument("--once", action="store_true",
                   help="one sample (after one interval) as a table, or JSON with --jsonl")
    p.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER", help="ss filter expression")


class _Terminated(Exception):
    """SIGTERM, turned into an exception so that every mode unwinds as on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run(args: argparse.Namespace) -> int:
    live = not args.jsonl and not args.once
    if live and not sys.stdout.isatty():
        raise UsageError("the live view needs a terminal on stdout; "
                         "use --jsonl (or --once) for a pipe or a file")
    if args.count is not None and live:
        raise UsageError("--count goes with --jsonl")
    count = 1 if args.once else args.count
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    traffic: Traffic | None = None
    try:
        sampler = Sampler(args.netns, filter=args.filter or None, pid=args.pid, user=args.user,
                          command=args.command, source=args.source)
        traffic = Traffic(sampler, args.interval, count)
        if live:
            from .top_screen import run_screen

            run_screen(traffic, " ".join(args.filter))
        else:
            for sample in traffic:
                if args.jsonl:
                    sys.stdout.write(output.dump_jsonl([sample.to_dict()]))
                else:
                    sys.stdout.write(format_processes(sample, Totals()))
                sys.stdout.flush()
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        if traffic is not None:
            traffic.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


# --- formatting, shared by --once and the live view ------------------------------


def rate_text(bytes_per_second: float) -> str:
    return output.human_bytes(bytes_per_second) + "/s"


@dataclass
class Totals:
    """Bytes per row since top started: (tx, rx) by process (pid, command, netns),
    by connection cookie and by remote (netns, address)."""

    processes: dict[Any, list[int]] = field(default_factory=dict)
    connections: dict[Any, list[int]] = field(default_factory=dict)
    remotes: dict[Any, list[int]] = field(default_factory=dict)

    def add(self, sample: TrafficSample) -> None:
        for p in sample.processes:
            self._add(self.processes, (p.pid, p.command, p.netns), p.tx_bytes, p.rx_bytes)
        for c in sample.connections:
            self._add(self.connections, _connection_key(c), c.tx_bytes, c.rx_bytes)
        for r in sample.remotes:
            self._add(self.remotes, (r.netns, r.address), r.tx_bytes, r.rx_bytes)

    @staticmethod
    def _add(table: dict[Any, list[int]], key: object, tx: int, rx: int) -> None:
        entry = table.get(key)
        if entry is None:
            table[key] = [tx, rx]
        else:
            entry[0] += tx
            entry[1] += rx


def _connection_key(c: ConnectionTraffic) -> tuple[str, int | None, str, int]:
    return (c.netns, c.cookie, c.local, c.local_port)


PROCESS_HEADERS = ("PID", "User", "Command", "Sent/s", "Recv/s", "Sent", "Recv", "Conns", "Netns",
                   "Container")
PROCESS_RIGHT = (0, 3, 4, 5, 6, 7)
CONNECTION_HEADERS = ("Proto", "Local", "Remote", "State", "Sent/s", "Recv/s", "Sent", "Recv",
                      "Netns", "Process")
REMOTE_HEADERS = ("Remote", "Netns", "Conns", "Sent/s", "Recv/s", "Sent", "Recv")


def process_rows(sample: TrafficSample, totals: Totals) -> list[tuple[str, ...]]:
    return [_process_row(p, totals.processes.get((p.pid, p.command, p.netns), [0, 0]))
            for p in sample.processes]


def _process_row(p: ProcessTraffic, total: list[int]) -> tuple[str, ...]:
    return ("-" if p.pid is None else str(p.pid), p.user or ("-" if p.uid is None else str(p.uid)),
            p.command + (" (exited)" if p.exited else ""), rate_text(p.tx_rate), rate_text(p.rx_rate),
            output.human_bytes(total[0]), output.human_bytes(total[1]), str(p.connections), p.netns,
            p.container or "-")


def connection_rows(sample: TrafficSample, totals: Totals) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for c in sample.connections:
        total = totals.connections.get(_connection_key(c), [0, 0])
        process = "-" if c.pid is None else f"{c.command}[{c.pid}]"
        if c.holders > 1:
            process += f" +{c.holders - 1}"
        rows.append((c.proto, _endpoint(c.local, c.local_port), _endpoint(c.remote, c.remote_port),
                     c.state, rate_text(c.tx_rate), rate_text(c.rx_rate),
                     output.human_bytes(total[0]), output.human_bytes(total[1]), c.netns, process))
    return rows


def remote_rows(sample: TrafficSample, totals: Totals) -> list[tuple[str, ...]]:
    return [_remote_row(r, totals.remotes.get((r.netns, r.address), [0, 0])) for r in sample.remotes]


def _remote_row(r: RemoteTraffic, total: list[int]) -> tuple[str, ...]:
    return (r.address, r.netns, str(r.connections), rate_text(r.tx_rate), rate_text(r.rx_rate),
            output.human_bytes(total[0]), output.human_bytes(total[1]))


def _endpoint(address: str | None, port: int | None) -> str:
    if address is None:
        return "*"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def format_processes(sample: TrafficSample, totals: Totals) -> str:
    """``--once``: the process table of one sample."""
    totals.add(sample)
    return output.table(PROCESS_HEADERS, process_rows(sample, totals), right=PROCESS_RIGHT)
