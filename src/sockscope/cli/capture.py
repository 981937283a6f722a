"""``sockscope capture``: a packet sniffer with tcpdump's flags.

Live: ``capture -i IFACE [-i IFACE2] [FILTER]`` prints a line per packet or writes
``-w FILE`` (with -C/-G/-W rotation). Offline: ``capture -r FILE [FILTER]``. Ctrl-C,
SIGTERM, ``-c`` and ``--duration`` all end the capture the same way: the loop stops,
the file is closed complete, the counters are printed. SIGUSR1 prints the counters
and goes on.
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from sockscope.errors import UsageError

from .argtypes import positive_float, positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope capture [-i IFACE ...] [-w FILE | -r FILE] [options] [FILTER ...]"
    p.description = (
        "Capture packets (AF_PACKET, TPACKET_V3 ring) and print one line each, as tcpdump -n "
        "does, or write them to a pcap/pcapng file. FILTER is a tcpdump filter expression, "
        "compiled by libpcap."
    )
    p.add_argument(
        "-i",
        "--interface",
        action="append",
        metavar="IFACE",
        help="interface to capture on; repeat for several; 'any' for all (default)",
    )
    p.add_argument("-N", "--netns", metavar="NAME|PATH|PID", help="capture in this network namespace")
    p.add_argument("-r", "--read", metavar="FILE", help="read packets from a pcap/pcapng file ('-': stdin)")
    p.add_argument("-w", "--write", metavar="FILE", help="write packets to FILE ('-': stdout)")
    p.add_argument(
        "--pcapng", action="store_true", help="write pcapng (the default when FILE ends in .pcapng)"
    )
    p.add_argument(
        "-c", "--count", type=positive_int, metavar="COUNT", help="stop after COUNT packets"
    )
    p.add_argument(
        "--duration", type=positive_float, metavar="SECONDS", help="stop after SECONDS"
    )
    p.add_argument(
        "-s",
        "--snaplen",
        type=int,
        default=262144,
        metavar="SNAPLEN",
        help="bytes kept of each packet (default and 0: 262144)",
    )
    p.add_argument(
        "-B",
        "--buffer-size",
        type=positive_int,
        metavar="KIB",
        help="capture ring size in KiB (default 64 MiB: 64 blocks of 1 MiB)",
    )
    p.add_argument(
        "--block-timeout",
        type=positive_int,
        default=10,
        metavar="MS",
        help="hand a partly filled ring block over after MS milliseconds (default 10)",
    )
    p.add_argument(
        "-p",
        "--no-promiscuous-mode",
        dest="promisc",
        action="store_false",
        help="do not put the interface into promiscuous mode",
    )
    p.add_argument(
        "-Q",
        "--direction",
        choices=("in", "out", "inout"),
        default="inout",
        help="capture packets received, sent, or both (default)",
    )
    p.add_argument(
        "--fanout",
        metavar="GROUP[:MODE]",
        help="join PACKET_FANOUT group GROUP (mode hash, lb, cpu, rollover, random, qm; "
        "default hash) so several captures share the load",
    )
    p.add_argument(
        "-C",
        dest="file_size",
        type=positive_float,
        metavar="MB",
        help="start a new file after MB million bytes",
    )
    p.add_argument(
        "-G",
        dest="rotate_seconds",
        type=positive_int,
        metavar="SECONDS",
        help="start a new file every SECONDS (FILE is a strftime template)",
    )
    p.add_argument(
        "-W",
        dest="file_count",
        type=positive_int,
        metavar="N",
        help="with -C: a ring of N files; with -G: stop after N files",
    )
    p.add_argument(
        "--time-stamp-precision",
        choices=("micro", "nano"),
        default="micro",
        help="timestamp digits printed and written to pcap files (default micro)",
    )
    p.add_argument(
        "-t",
        dest="time_style",
        action="count",
        default=0,
        help="-t no time, -tt epoch, -ttt delta, -tttt date, -ttttt since first",
    )
    p.add_argument("-e", dest="link_header", action="store_true", help="print the link-level header")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more decode detail")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the counters at the end")
    p.add_argument("--json", action="store_true", help="decoded packets as one JSON array")
    p.add_argument("--jsonl", action="store_true", help="decoded packets, one JSON object per line")
    p.add_argument(
        "-Z",
        "--relinquish-privileges",
        metavar="USER",
        help="drop root for USER once the capture sockets are open",
    )
    p.add_argument("--owners", action="store_true",
                   help="name the process at the local end of each TCP/UDP packet (in the line, the JSON, "
                        "and as pcapng packet comments)")  # fmt: skip
    p.add_argument("--flows", action="store_true",
                   help="with -r: packets per TCP/UDP flow instead of one line per packet")  # fmt: skip
    p.add_argument("-D", "--list-interfaces", action="store_true", help="list the interfaces and exit")
    p.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER", help="tcpdump filter expression")


def run(args: argparse.Namespace) -> int:
    if args.json and args.jsonl:
        raise UsageError("--json and --jsonl exclude each other")
    if args.write and (args.json or args.jsonl):
        raise UsageError("-w writes a capture file; --json/--jsonl print packets, choose one")
    if args.snaplen == 0:
        args.snaplen = 262144
    if not 1 <= args.snaplen <= 262144:
        raise UsageError(f"snapshot length {args.snaplen} out of range 0..262144")
    if (args.file_size or args.rotate_seconds or args.file_count) and not args.write:
        raise UsageError("-C, -G and -W need -w FILE")
    if args.write == "-" and (args.file_size or args.rotate_seconds):
        raise UsageError("cannot rotate standard output")
    args.filter_text = " ".join(args.filter)
    if args.list_interfaces:
        return _list_interfaces(args)
    if args.flows:
        return _flows(args)
    if args.read is not None:
        if args.interface or args.netns or args.owners:
            raise UsageError("-r reads a file; -i, -N and --owners are for live captures")
        from .capture_read import read_file

        return read_file(args)
    from .capture_live import LiveRun

    live = LiveRun(args)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}

    def on_stop(signum: int, frame: FrameType | None) -> None:
        live.request_stop()

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        live.request_stats()

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        return live.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _flows(args: argparse.Namespace) -> int:
    """``capture -r FILE --flows``: the flows of a file, busiest first."""
    if args.read is None or args.read == "-":
        raise UsageError("--flows counts the flows of a file: give -r FILE")
    if args.filter_text or args.count or args.write:
        raise UsageError("--flows takes no filter, -c or -w")
    from sockscope.capture.flows import count_flows
    from sockscope.packets.quick import flow_text

    counts = count_flows(args.read)
    if args.json or args.jsonl:
        import json

        rows = [{"flow": flow_text(key), "packets": n} for key, n in counts.most_common()]
        text = json.dumps(rows, indent=1) + "\n" if args.json else "".join(json.dumps(r) + "\n" for r in rows)
        sys.stdout.write(text)
        return 0
    sys.stdout.write("".join(f"{n:>10} {flow_text(key)}\n" for key, n in counts.most_common()))
    return 0


def _list_interfaces(args: argparse.Namespace) -> int:
    import socket

    from sockscope.platform.linux import in_netns, resolve_netns

    with in_netns(resolve_netns(args.netns) if args.netns else None):
        names = socket.if_nameindex()
    for index, name in names:
        sys.stdout.write(f"{index}.{name}\n")
    sys.stdout.write(f"{len(names) + 1}.any (every interface, cooked headers)\n")
    return 0
