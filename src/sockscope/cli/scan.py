"""``sockscope scan``: which ports of a host are open, closed or filtered, and why
(nmap -sT / -sS / -sU). Meant for checking the hosts you run. Exit status 0 once
the scan is done, whatever the states; 2 for bad arguments or an unknown host; 1
when it cannot be done (no route, CAP_NET_RAW missing for --syn or --udp)."""

from __future__ import annotations

import argparse
import json
import socket
from collections import Counter

from . import output
from .stdout import write

SHOW_ALL_UP_TO = 25  # above this many ports, the most common non-open state is summarised (as nmap)
OPEN_STATES = ("open", "open|filtered")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = (
        "sockscope scan HOST [-p PORTS] [--syn|--udp] [--rate PPS] [--retries N] [-W TIMEOUT]"
        " [-4|-6] [--open] [--json]"
    )
    p.add_argument("host", metavar="HOST", help="name or address")
    p.add_argument(
        "-p", "--ports", default="1-1024", help="ports: 22,80,8000-8100 or - for all (default 1-1024)"
    )
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--syn",
        dest="method",
        action="store_const",
        const="syn",
        help="TCP SYN (half-open) scan over raw sockets; needs CAP_NET_RAW",
    )
    how.add_argument("--udp", dest="method", action="store_const", const="udp", help="UDP scan")
    p.add_argument("--rate", type=float, default=1000.0, help="probes per second (default 1000; 0: no limit)")
    p.add_argument(
        "--retries", type=int, default=1, help="times an unanswered probe is sent again (default 1)"
    )
    p.add_argument(
        "-W",
        "--timeout",
        type=float,
        default=1.0,
        help="longest wait for an answer in seconds (default 1; shorter once RTTs are known)",
    )
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    p.add_argument("--open", action="store_true", help="show open (and open|filtered) ports only")
    p.add_argument("--json", action="store_true", help="one JSON object with every port")


def run(args: argparse.Namespace) -> int:
    from sockscope.probe.scan import scan

    result = scan(
        args.host,
        args.ports,
        method=args.method or "connect",
        rate=args.rate,
        retries=args.retries,
        timeout=args.timeout,
        family=args.family,
    )
    ports = result.ports
    # --open: open and possibly open ports only (nmap's "open (or possibly open)").
    shown = [p for p in ports if p.state in OPEN_STATES] if args.open else ports
    if args.json:
        out = result.to_dict()
        if args.open:
            out["ports"] = [p.to_dict() for p in shown]
        write(json.dumps(out, indent=1) + "\n")
        return 0
    lines = [
        f"scan of {args.host} ({result.address}): {len(ports)} {ports[0].proto} ports, {result.method},"
        f" {result.probes_sent} probes in {result.elapsed_ms / 1000:.2f} s"
    ]
    lines += [f"warning: {w}" for w in result.warnings]
    hidden = Counter((p.state, p.reason) for p in ports if p.state not in OPEN_STATES)
    if args.open:
        groups = hidden.most_common()
    elif len(ports) > SHOW_ALL_UP_TO and hidden:
        groups = hidden.most_common(1)
        shown = [p for p in ports if (p.state, p.reason) != groups[0][0]]
    else:
        groups = []
    if groups:
        proto = ports[0].proto
        lines.append(
            "Not shown: "
            + ", ".join(
                f"{n} {state} {proto} port{'s' if n != 1 else ''} ({reason})" for (state, reason), n in groups
            )
        )
    rows = [
        (f"{p.port}/{p.proto}", p.state, p.reason + (f" from {p.reason_from}" if p.reason_from else ""))
        for p in shown
    ]
    table = output.table(("PORT", "STATE", "REASON"), rows) if rows else ""
    write("\n".join(lines) + "\n" + table)
    return 0
