"""``sockscope ifaces``: interface counters and addresses (netstat -i, ip -s link),
or their rates every few seconds with ``--interval``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from sockscope.errors import UsageError
from sockscope.inventory.interfaces import Interface, InterfaceRates, interfaces, rates

from . import output
from .argtypes import interval, positive_int

HEADERS = ("Iface", "State", "MTU", "RX-bytes", "RX-pkts", "RX-err", "RX-drop",
           "TX-bytes", "TX-pkts", "TX-err", "TX-drop", "Addresses")
RATE_HEADERS = ("Iface", "RX-B/s", "RX-pkt/s", "RX-err/s", "RX-drop/s",
                "TX-B/s", "TX-pkt/s", "TX-err/s", "TX-drop/s")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope ifaces [NAME ...] [-N NETNS] [--json] [--interval SECONDS [--count N]]"
    p.add_argument("names", nargs="*", metavar="NAME", help="only these interfaces")
    p.add_argument("-N", "--netns", metavar="NAME|PATH|PID", help="look in this network namespace")
    p.add_argument("--json", action="store_true",
                   help="one JSON array (with --interval: one JSON object per line and interval)")
    p.add_argument("--interval", type=interval, metavar="SECONDS",
                   help="print rates every SECONDS until Ctrl-C")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N intervals")


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.interval is None:
        raise UsageError("--count needs --interval")
    if args.interval is not None:
        return _run_rates(args)
    found = interfaces(args.netns, args.names)
    if args.json:
        output.write(output.dump_json([i.to_dict() for i in found]))
    else:
        output.write(format_table(found))
    return 0


def _run_rates(args: argparse.Namespace) -> int:
    # Only the first snapshot checks the names: an interface removed while we
    # watch just drops out of the table (rates() matches by index) instead of
    # ending the run with "unknown interface".
    before = interfaces(args.netns, args.names)
    watched = {i.index for i in before} if args.names else None
    taken = time.monotonic()
    deadline = taken
    done = 0
    try:
        while args.count is None or done < args.count:
            # Sleep to a fixed schedule so intervals do not drift by the dump time.
            deadline += args.interval
            time.sleep(max(0.0, deadline - time.monotonic()))
            after = interfaces(args.netns)
            if watched is not None:
                after = [i for i in after if i.index in watched]
            now = time.monotonic()
            current = rates(before, after, now - taken)
            if args.json:
                record = {"time": time.time(), "seconds": round(now - taken, 6),
                          "interfaces": [r.to_dict() for r in current]}
                output.write(output.dump_jsonl([record]))
            else:
                output.write(("\n" if done else "") + format_rates(current))
            sys.stdout.flush()  # a reader on a pipe sees each interval as it ends
            before, taken = after, now
            done += 1
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop watching
    return 0


def format_table(found: Sequence[Interface]) -> str:
    rows = [
        (i.name, i.state, "-" if i.mtu is None else str(i.mtu),
         output.human_bytes(i.rx_bytes), str(i.rx_packets), str(i.rx_errors), str(i.rx_dropped),
         output.human_bytes(i.tx_bytes), str(i.tx_packets), str(i.tx_errors), str(i.tx_dropped),
         " ".join(i.addresses))
        for i in found
    ]
    return output.table(HEADERS, rows, right=range(2, 11))


def format_rates(current: Sequence[InterfaceRates]) -> str:
    def n(value: float) -> str:
        return f"{value:.1f}" if value < 100 else f"{value:.0f}"

    rows = [
        [r.name, output.human_bytes(r.rx_bytes), n(r.rx_packets), n(r.rx_errors), n(r.rx_drops),
         output.human_bytes(r.tx_bytes), n(r.tx_packets), n(r.tx_errors), n(r.tx_drops)]
        for r in current
    ]
    # table() never pads its last column (meant for free text); this one is a
    # number, so right-align it here to keep the column straight.
    width = max([len(RATE_HEADERS[-1]), *(len(row[-1]) for row in rows)])
    for row in rows:
        row[-1] = row[-1].rjust(width)
    return output.table(RATE_HEADERS, rows, right=range(1, 8))
