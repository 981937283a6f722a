"""``sockscope ping``: ICMP echo, printed as iputils ping prints it."""

from __future__ import annotations

import argparse
import json
import socket
import sys

from . import output


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = (
        "sockscope ping HOST [-c COUNT] [-i INTERVAL] [-W TIMEOUT] [-s SIZE] [-t TTL] [-4|-6] [--json] [-v]"
    )
    p.add_argument("host", metavar="HOST", help="name or address")
    p.add_argument("-c", "--count", type=int, help="stop after COUNT requests (default: until Ctrl-C)")
    p.add_argument("-i", "--interval", type=float, default=1.0, help="seconds between requests (default 1)")
    p.add_argument(
        "-W", "--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)"
    )
    p.add_argument("-s", "--size", type=int, default=56, help="ICMP data bytes (default 56)")
    p.add_argument("-t", "--ttl", type=int, default=64, help="TTL / hop limit (default 64)")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    p.add_argument("--json", action="store_true", help="one JSON object at the end")
    p.add_argument("-v", "--verbose", action="store_true", help="also count ICMP that was not for us")


def run(args: argparse.Namespace) -> int:
    from sockscope.probe.model import PingError, PingReply
    from sockscope.probe.ping import ping

    def show(event: PingReply | PingError) -> None:
        if isinstance(event, PingReply):
            ttl = f" ttl={event.ttl}" if event.ttl is not None else ""
            rtt = _rtt(event.rtt_ms)
            line = f"{event.size} bytes from {event.address}: icmp_seq={event.seq}{ttl} time={rtt} ms"
            if event.duplicate:
                line += " (DUP!)"
        else:
            line = f"From {event.address} icmp_seq={event.seq} {event.text}"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def start(address: str) -> None:
        ip_len = 20 if ":" not in address else 40
        sys.stdout.write(
            f"PING {args.host} ({address}) {args.size}({args.size + 8 + ip_len}) bytes of data.\n"
        )
        sys.stdout.flush()

    result = ping(
        args.host,
        count=args.count,
        interval=args.interval,
        timeout=args.timeout,
        size=args.size,
        ttl=args.ttl,
        family=args.family,
        on_reply=None if args.json else show,
        on_start=None if args.json else start,
    )
    if args.json:
        output.write(json.dumps(result.to_dict(), indent=1) + "\n")
        return 0 if result.received else 1
    loss = round(result.loss * 100, 3)
    lines = [
        "",
        f"--- {args.host} ping statistics ---",
        f"{result.sent} packets transmitted, {result.received} received"
        + (f", +{result.duplicates} duplicates" if result.duplicates else "")
        + (f", +{len(result.errors)} errors" if result.errors else "")
        + f", {loss:g}% packet loss, time {result.elapsed_ms:.0f}ms",
    ]
    stats = result.rtt_stats()
    if stats is not None:
        lines.append("rtt min/avg/max/mdev = " + "/".join(f"{v:.3f}" for v in stats) + " ms")
    if args.verbose:
        lines.append(
            f"ignored {result.ignored} ICMP messages for others, {result.malformed} malformed"
            + (" (ICMP datagram socket)" if result.unprivileged else "")
        )
    output.write("\n".join(lines) + "\n")
    return 0 if result.received else 1


def _rtt(ms: float) -> str:
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"
