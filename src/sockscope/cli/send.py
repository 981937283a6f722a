"""``sockscope send -i IFACE FILE``: replay the frames of a capture file out of an
interface through a packet socket, as tcpreplay does."""

from __future__ import annotations

import argparse
import sys

from sockscope.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope send -i IFACE [-N NETNS] [--multiplier X | --pps N | --topspeed] [--loop N] FILE"
    p.description = (
        "Replay the Ethernet frames of a pcap/pcapng file out of IFACE (a packet socket; needs "
        "CAP_NET_RAW). Timing as captured unless --multiplier, --pps or --topspeed says otherwise."
    )
    p.add_argument("-i", "--interface", required=True, metavar="IFACE", help="interface to send on")
    p.add_argument("-N", "--netns", metavar="NAME|PATH|PID", help="send in this network namespace")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--multiplier", "-x", type=float, default=1.0, metavar="X",
                      help="replay X times as fast as captured (default 1.0)")
    pace.add_argument("--pps", "-p", type=float, metavar="N", help="send N frames a second")
    pace.add_argument("--topspeed", "-t", action="store_true", help="send as fast as possible")
    p.add_argument("--loop", "-l", type=int, default=1, metavar="N", help="send the file N times")
    p.add_argument("-c", "--count", type=int, metavar="N", help="send at most N frames")
    p.add_argument("file", metavar="FILE", help="pcap or pcapng file of Ethernet frames")


def run(args: argparse.Namespace) -> int:
    from sockscope.capture.inject import replay

    if args.count is not None and args.count <= 0:
        raise UsageError(f"-c must be positive, not {args.count}")
    result = replay(
        args.interface,
        args.file,
        netns=args.netns,
        multiplier=None if args.topspeed else args.multiplier,
        pps=args.pps,
        loops=args.loop,
        count=args.count,
    )
    sys.stdout.write(
        f"Actual: {result.sent} packets ({result.bytes} bytes) sent in {result.seconds:.6f} seconds, "
        f"{result.rate_pps:.1f} pps\n"
    )
    if result.failed:
        sys.stderr.write(f"sockscope send: {result.failed} frames not sent; first: {result.first_error}\n")
        return 1
    return 0
