"""``sockscope ping``: ICMP echo, printed as iputils ping prints it, with its
exit statuses: 0 when a reply came, 1 when none did (or, with -w, fewer than -c),
2 when nothing could be sent (no route) or the arguments are wrong."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time

from .options import integer
from .stdout import write

NOTHING_SENT = 2  # iputils' status for "connect: Network is unreachable" and usage errors


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = (
        "sockscope ping HOST [-c COUNT] [-i INTERVAL] [-W TIMEOUT] [-w DEADLINE] [-s SIZE] [-t TTL]"
        " [-Q TOS] [-p PATTERN] [-I IFACE|ADDR] [-M do|want|dont|probe] [-q] [-D] [-f] [-4|-6] [--json] [-v]"
    )
    p.add_argument("host", metavar="HOST", help="name or address")
    p.add_argument("-c", "--count", type=int, help="stop after COUNT requests (default: until Ctrl-C)")
    p.add_argument("-i", "--interval", type=float, help="seconds between requests (default 1; -f: 0.01)")
    p.add_argument(
        "-W", "--timeout", type=float, default=10.0, help="seconds to wait for each reply (default 10)"
    )
    p.add_argument(
        "-w",
        "--deadline",
        type=float,
        help="stop after DEADLINE seconds, whatever was sent or received (with -c: once COUNT replies came)",
    )
    p.add_argument("-s", "--size", type=int, default=56, help="ICMP data bytes (default 56)")
    p.add_argument("-t", "--ttl", type=int, default=64, help="TTL / hop limit (default 64)")
    p.add_argument("-Q", "--tos", type=integer, default=0, help="TOS / traffic class (decimal or 0x..)")
    p.add_argument("-p", "--pattern", help="up to 16 bytes in hex to fill the data with (e.g. ff00)")
    p.add_argument("-I", "--interface", metavar="IFACE|ADDR", help="send through IFACE or from ADDR")
    p.add_argument(
        "-M",
        "--pmtudisc",
        choices=("do", "want", "dont", "probe"),
        help="path MTU discovery: do (DF, no fragments), want (the default), dont, probe",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only the first line and the summary")
    p.add_argument("-D", "--timestamp", action="store_true", help="put the time before each line")
    p.add_argument("-f", "--flood", action="store_true", help="a '.' per request sent, a backspace per reply")
    fam = p.add_mutually_exclusive_group()
    fam.add_argument("-4", dest="family", action="store_const", const=socket.AF_INET, help="IPv4 only")
    fam.add_argument("-6", dest="family", action="store_const", const=socket.AF_INET6, help="IPv6 only")
    p.add_argument("--json", action="store_true", help="one JSON object at the end")
    p.add_argument("-v", "--verbose", action="store_true", help="also count ICMP that was not for us")


def run(args: argparse.Namespace) -> int:
    from sockscope.errors import UsageError
    from sockscope.probe.ping import ping
    from sockscope.probe.records import PingError, PingReply
    from sockscope.probe.resolve import NoRoute

    # A script that starts ping in the background hands it SIGINT ignored, and Python
    # then leaves it so: iputils sets its own handler, so Ctrl-C (or kill -INT) ends it
    # with the summary whatever the shell did.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pattern = _pattern(args.pattern, UsageError)
    interval = args.interval if args.interval is not None else (0.01 if args.flood else 1.0)
    lines = not (args.json or args.quiet or args.flood)

    def stamp() -> str:
        return f"[{time.time():.6f}] " if args.timestamp else ""

    def show(event: PingReply | PingError) -> None:
        if args.flood:
            write("\b")
            return
        if isinstance(event, PingReply):
            ttl = f" ttl={event.ttl}" if event.ttl is not None else ""
            rtt = _rtt(event.rtt_ms)
            line = f"{event.size} bytes from {event.address}: icmp_seq={event.seq}{ttl} time={rtt} ms"
            if event.duplicate:
                line += " (DUP!)"
        else:
            line = f"From {event.address} icmp_seq={event.seq} {event.text}"
        write(stamp() + line + "\n")

    def refused(seq: int, text: str) -> None:
        sys.stderr.write(f"sockscope ping: {text}\n")
        sys.stderr.flush()
        if args.flood:
            write("E")

    def start(address: str) -> None:
        if ":" in address:  # iputils' two forms
            write(f"PING {args.host}({address}) {args.size} data bytes\n")
        else:
            write(f"PING {args.host} ({address}) {args.size}({args.size + 28}) bytes of data.\n")

    def sent(seq: int) -> None:
        write(".")

    try:
        result = ping(
            args.host,
            count=args.count,
            interval=interval,
            timeout=args.timeout,
            deadline=args.deadline,
            size=args.size,
            ttl=args.ttl,
            tos=args.tos,
            pattern=pattern,
            interface=args.interface,
            pmtudisc=args.pmtudisc,
            family=args.family,
            on_reply=show if lines or args.flood else None,
            on_start=None if args.json else start,
            on_send_error=refused,
            on_send=sent if args.flood and not args.json else None,
        )
    except NoRoute as exc:
        sys.stderr.write(f"sockscope ping: {exc}\n")
        return NOTHING_SENT
    status = _status(result.received, args.count, args.deadline)
    if args.json:
        write(json.dumps(result.to_dict(), indent=1) + "\n")
        return status
    loss = round(result.loss * 100, 3)
    errors = len(result.errors) + len(result.send_errors)
    out = [
        "",
        f"--- {args.host} ping statistics ---",
        f"{result.sent} packets transmitted, {result.received} received"
        + (f", +{result.duplicates} duplicates" if result.duplicates else "")
        + (f", +{errors} errors" if errors else "")
        + f", {loss:g}% packet loss, time {result.elapsed_ms:.0f}ms",
    ]
    stats = result.rtt_stats()
    if stats is not None:
        out.append("rtt min/avg/max/mdev = " + "/".join(f"{v:.3f}" for v in stats) + " ms")
    if args.verbose:
        out.append(
            f"ignored {result.ignored} ICMP messages for others, {result.malformed} malformed"
            + (" (ICMP datagram socket)" if result.unprivileged else "")
        )
    write(("\n" if args.flood else "") + "\n".join(out) + "\n")
    return status


def _status(received: int, count: int | None, deadline: float | None) -> int:
    """iputils: 1 when no reply came, or when a deadline ran out before COUNT replies."""
    if received == 0 or (deadline is not None and count is not None and received < count):
        return 1
    return 0


def _pattern(text: str | None, error: type[Exception]) -> bytes | None:
    """ping -p: hex digits, up to 16 bytes (an odd last digit is a nibble, as iputils)."""
    if text is None:
        return None
    digits = text[2:] if text.lower().startswith("0x") else text
    try:
        value = bytes.fromhex(digits if len(digits) % 2 == 0 else digits + "0")
    except ValueError:
        raise error(f"bad pattern {text!r}: want hex digits, e.g. ff00") from None
    if not 1 <= len(value) <= 16:
        raise error(f"bad pattern {text!r}: 1 to 16 bytes")
    return value


def _rtt(ms: float) -> str:
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"
