"""``sockscope watch [FILTER]``: a live stream of TCP/UDP socket events.

One line (or JSON object) per event, flushed at once because the output is
usually piped. Ctrl-C and SIGTERM end the stream with status 0: stopping is
the normal way to finish a watch, not a failure.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from sockscope.errors import UsageError
from sockscope.inventory.model import InetAddress
from sockscope.inventory.watch import SocketEvent, watch

from . import output
from .argtypes import interval
from .ls import inet_text, owners_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope watch [options] [FILTER ...]"
    p.description = ("Stream TCP/UDP socket events as they happen: new sockets, state changes, "
                     "closes (even of sockets that live shorter than one poll). FILTER is an ss "
                     "filter expression, e.g. 'dport = :443'. Ends on Ctrl-C.")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP only")
    p.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    p.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    p.add_argument("-N", "--netns", metavar="NAME|PATH|PID", help="watch this network namespace")
    p.add_argument("--interval", type=interval, default=0.25, metavar="SECONDS",
                   help="how often to look for new sockets and state changes (default 0.25)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per event")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.add_argument("--no-owners", action="store_true", help="skip the owner lookup")
    p.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER",
                   help="ss filter expression")


class _Terminated(Exception):
    """SIGTERM, turned into an exception so the watch unwinds like on Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def run(args: argparse.Namespace) -> int:
    protos = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on] or ["tcp", "udp"]
    families = [f for f, on in (("inet", args.ipv4), ("inet6", args.ipv6)) if on] or None
    if args.count is not None and args.count < 1:
        raise UsageError("--count must be at least 1")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    events = None
    try:
        events = watch(args.filter or None, netns=args.netns, interval=args.interval,
                       owners=not args.no_owners, proto=protos, family=families, on_note=_note)
        shown = 0
        for event in events:
            line = output.dump_jsonl([event.to_dict()]) if args.jsonl else format_event(event)
            sys.stdout.write(line)
            sys.stdout.flush()
            shown += 1
            if shown == args.count:
                break
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        if events is not None:
            events.close()
        signal.signal(signal.SIGTERM, previous)
    return 0


def _note(message: str) -> None:
    sys.stderr.write(f"sockscope watch: {message}\n")
    sys.stderr.flush()


def format_event(event: SocketEvent) -> str:
    """``12:00:01.234 new    tcp ESTABLISHED 127.0.0.1:40000 -> 127.0.0.1:8080 curl[123]:4``"""
    s = event.socket
    stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
    millis = int(event.time * 1000) % 1000
    state = f"{event.old_state} -> {s.state}" if event.event == "state" else s.state
    where = inet_text(s.local, s.proto, None) if isinstance(s.local, InetAddress) else "*"
    if s.interface:
        host, _, port = where.rpartition(":")
        where = f"{host}%{s.interface}:{port}"
    if isinstance(s.remote, InetAddress):
        where += f" -> {inet_text(s.remote, s.proto, None)}"
    owners = owners_text(s.owners)
    return (f"{stamp}.{millis:03d} {event.event:<6} {s.proto} {state} {where}"
            f"{' ' + owners if owners else ''}\n")
