"""``sockscope kill FILTER``: destroy matching TCP/UDP sockets (as ``ss -K``)."""

from __future__ import annotations

import argparse
import sys

from sockscope.inventory.kill import kill_sockets
from sockscope.inventory.model import InetAddress

from . import output
from .ls import inet_text, owners_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope kill [options] FILTER ..."
    p.description = ("Destroy the TCP/UDP sockets that match an ss filter expression "
                     "(SOCK_DESTROY, as ss -K). An empty filter is refused.")
    p.add_argument("-t", "--tcp", action="store_true", help="TCP only")
    p.add_argument("-u", "--udp", action="store_true", help="UDP only")
    p.add_argument("-4", "--ipv4", action="store_true", help="IPv4 only")
    p.add_argument("-6", "--ipv6", action="store_true", help="IPv6 only")
    p.add_argument("-l", "--listening", action="store_true",
                   help="sockets not connected only (listeners, bound UDP), as ss -l")
    p.add_argument("-N", "--netns", metavar="NAME|PATH|PID", help="in this network namespace")
    p.add_argument("--dry-run", action="store_true", help="show what would be destroyed")
    p.add_argument("--json", action="store_true", help="results as a JSON array")
    p.add_argument("filter", nargs=argparse.REMAINDER, metavar="FILTER")


def run(args: argparse.Namespace) -> int:
    protos = [p for p, on in (("tcp", args.tcp), ("udp", args.udp)) if on] or ["tcp", "udp"]
    families = [f for f, on in (("inet", args.ipv4), ("inet6", args.ipv6)) if on] or ["inet", "inet6"]
    results = kill_sockets(args.filter, proto=protos, family=families, netns=args.netns,
                           dry_run=args.dry_run,
                           listening=True if args.listening else None)
    if args.json:
        output.write(output.dump_json([r.to_dict() for r in results]))
    else:
        verb = "would close" if args.dry_run else "closed"
        lines = []
        for r in results:
            s = r.socket
            assert isinstance(s.local, InetAddress)  # kill_sockets only returns inet sockets
            peer = inet_text(s.remote, s.proto) if isinstance(s.remote, InetAddress) else "*:*"
            what = f"{s.proto} {s.state} {inet_text(s.local, s.proto)} {peer}"
            owners = owners_text(s.owners)
            status = verb if r.ok else f"failed ({r.error})"
            lines.append(f"{status} {what}{' ' + owners if owners else ''}\n")
        output.write("".join(lines))
        if not results:
            sys.stderr.write("sockscope kill: no socket matched\n")
    return 0 if all(r.ok for r in results) and results else 1
