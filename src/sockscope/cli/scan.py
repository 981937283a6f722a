"""``sockscope scan``: which ports of a host are open, closed or filtered, and why
(nmap -sT / -sS / -sU). Meant for checking the hosts you run."""

from __future__ import annotations

import argparse
import json
import socket
from collections import Counter

from . import output

SHOW_ALL_UP_TO = 25  # above this many ports, the most common non-open state is summarised (as nmap)


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
    p.add_argument("--open", action="store_true", help="show open ports only")
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
    if args.json:
        output.write(json.dumps(result.to_dict(), indent=1) + "\n")
        return 0
    ports = result.ports
    lines = [
        f"scan of {args.host} ({result.address}): {len(ports)} {ports[0].proto} ports, {result.method},"
        f" {result.probes_sent} probes in {result.elapsed_ms / 1000:.2f} s"
    ]
    hidden = Counter((p.state, p.reason) for p in ports if p.state != "open")
    shown = ports
    if args.open:
        shown = [p for p in ports if p.state == "open"]
        lines.append(f"Not shown: {len(ports) - len(shown)} ports not open")
    elif len(ports) > SHOW_ALL_UP_TO and hidden:
        (state, reason), count = hidden.most_common(1)[0]
        shown = [p for p in ports if (p.state, p.reason) != (state, reason)]
        lines.append(f"Not shown: {count} {state} {ports[0].proto} ports ({reason})")
    rows = [
        (f"{p.port}/{p.proto}", p.state, p.reason + (f" from {p.reason_from}" if p.reason_from else ""))
        for p in shown
    ]
    table = output.table(("PORT", "STATE", "REASON"), rows) if rows else ""
    output.write("\n".join(lines) + "\n" + table)
    return 0
