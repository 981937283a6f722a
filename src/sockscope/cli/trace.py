"""``sockscope trace``: traceroute with UDP, ICMP echo or TCP SYN probes."""

from __future__ import annotations

# `socket`'s C core (for AF_INET/AF_INET6): see probe/rawio.py on start-up time.
import _socket
import sys

from .options import Option, add_all, integer
from .stdout import write

TYPE_CHECKING = False  # not `from typing import ...`: see sockscope/__init__.py (start-up time)
if TYPE_CHECKING:
    import argparse

    from sockscope.probe.records import TraceHop
    from sockscope.probe.trace import TraceRun

    from .options import Parsed

# Runs for moments and only prints: no garbage collector, no interpreter teardown
# (see cli.main.launch).
BRIEF = True

USAGE = (
    "sockscope trace HOST [PACKETLEN] [-I|-U|-T] [-p PORT] [-q N] [-m MAX] [-f FIRST] [-w WAIT]"
    " [-N PARALLEL] [-t TOS] [-F] [-s SOURCE] [-i IFACE] [-r] [-4|-6] [--json] [-v]"
)

# Declared once for argparse and for the quick parser (cli/options.py): a traceroute
# is judged by its start-up, and argparse is a third of a Python one's.
OPTIONS = (
    Option("host", metavar="HOST", help="name or address"),
    Option(
        "packet_len",
        metavar="PACKETLEN",
        type=int,
        nargs="?",
        help="whole probe packet length (default 60 for IPv4, 80 for IPv6)",
    ),
    Option(
        "-I",
        "--icmp",
        group="method",
        dest="method",
        action="store_const",
        const="icmp",
        help="ICMP echo probes",
    ),
    Option(
        "-U",
        "--udp",
        group="method",
        dest="method",
        action="store_const",
        const="udp",
        help="UDP probes (the default)",
    ),
    Option(
        "-T", "--tcp", group="method", dest="method", action="store_const", const="tcp", help="TCP SYN probes"
    ),
    Option("-p", "--port", type=int, help="destination port (UDP 33434, TCP 80)"),
    Option("-q", "--queries", type=int, default=3, help="probes per hop (default 3)"),
    Option("-m", "--max-hops", type=int, default=30, help="largest TTL (default 30)"),
    Option("-f", "--first", type=int, default=1, help="first TTL (default 1)"),
    Option(
        "-w",
        "--wait",
        default="5,3,10",
        metavar="MAX[,HERE,NEAR]",
        help="wait at most MAX s, HERE times an RTT from the same hop, NEAR times one from a later"
        " hop (default 5,3,10, as traceroute)",
    ),
    Option("-N", "--sim-queries", type=int, default=16, help="probes in flight at once (default 16)"),
    Option("-t", "--tos", type=integer, default=0, help="TOS / traffic class of the probes (0x.. too)"),
    Option(
        "-F",
        "--dont-fragment",
        action="store_true",
        help="do not fragment: a probe too large for the path is marked !F-MTU",
    ),
    Option("-s", "--source", help="send from this address of the host"),
    Option("-i", "--interface", help="send through this interface"),
    Option("-r", "--resolve", action="store_true", help="show host names (reverse lookups)"),
    Option("-n", dest="numeric", action="store_true", help="numeric output (the default; for habit)"),
    Option(
        "-4", group="family", dest="family", action="store_const", const=_socket.AF_INET, help="IPv4 only"
    ),
    Option(
        "-6", group="family", dest="family", action="store_const", const=_socket.AF_INET6, help="IPv6 only"
    ),
    Option("--json", action="store_true", help="one JSON object with every probe"),
    Option(
        "-v",
        "--verbose",
        action="store_true",
        help="show what quoted packets reveal (TOS, TTL at arrival, MPLS) and ICMP not for us",
    ),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = USAGE
    add_all(p, OPTIONS)


def _waits(text: str) -> tuple[float, float, float]:
    from sockscope.errors import UsageError

    parts = text.split(",")
    defaults = [5.0, 3.0, 10.0]
    try:
        values = [float(x) for x in parts]
    except ValueError:
        raise UsageError(f"bad wait {text!r}: want MAX[,HERE,NEAR]") from None
    if not 1 <= len(values) <= 3:
        raise UsageError(f"bad wait {text!r}: want MAX[,HERE,NEAR]")
    values += defaults[len(values) :]
    return values[0], values[1], values[2]


def run(args: argparse.Namespace | Parsed) -> int:
    from sockscope.probe.trace import trace_run

    wait, here, near = _waits(args.wait)

    def start(result: TraceRun) -> None:
        if result.fallback is not None:  # e.g. -I refused an ICMP datagram socket
            sys.stderr.write(f"sockscope trace: {result.fallback}\n")
            sys.stderr.flush()
        if args.json:
            return
        write(
            f"traceroute to {args.host} ({result.address}), {result.max_ttl} hops max, "
            f"{result.packet_size} byte packets\n"
        )

    def show(hop: TraceHop) -> None:
        write(format_hop(hop, args.verbose) + "\n")

    result = trace_run(
        args.host,
        method=args.method or "udp",
        port=args.port,
        queries=args.queries,
        first_ttl=args.first,
        max_ttl=args.max_hops,
        wait=wait,
        here=here,
        near=near,
        parallel=args.sim_queries,
        packet_len=args.packet_len,
        tos=args.tos,
        dont_fragment=args.dont_fragment,
        source=args.source,
        interface=args.interface,
        family=args.family,
        names=args.resolve,
        on_hop=None if args.json else show,
        on_start=start,
    )
    if args.json:
        import json

        from sockscope.probe.model import TraceResult

        write(json.dumps(TraceResult(**result.fields()).to_dict(), indent=1) + "\n")
    elif args.verbose:
        how = "no CAP_NET_RAW" if result.unprivileged else "raw sockets"
        write(
            "".join(f"note: {note}\n" for note in result.notes)
            + f"{'reached' if result.reached else 'not reached'} in {result.elapsed_ms:.0f} ms ({how});"
            f" ignored {result.ignored} ICMP messages for others, {result.malformed} malformed\n"
        )
    return 0


def format_hop(hop: object, verbose: bool) -> str:
    from sockscope.probe.records import TraceHop

    assert isinstance(hop, TraceHop)
    line = f"{hop.ttl:2d} "
    shown: str | None = None
    for probe in hop.probes:
        if probe.rtt_ms is None:
            line += " *"
            continue
        if probe.address is None:  # our own kernel refused it (too long): traceroute's form
            line += f" *  {probe.rtt_ms:.3f} ms {probe.mark}"
            shown = None
            continue
        if probe.address != shown:
            shown = probe.address
            line += f" {probe.name} ({probe.address})" if probe.name else f" {probe.address}"
        line += f"  {probe.rtt_ms:.3f} ms"
        if probe.mark:
            line += f" {probe.mark}"
        if verbose and probe.notes:
            line += f" <{'; '.join(probe.notes)}>"
    return line
