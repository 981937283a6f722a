"""``sockscope guard``: enforce a policy's address rules before accept, in nftables."""

from __future__ import annotations

import argparse
import sys

from sockscope.errors import UsageError

from . import output
from .check import add_policy_arguments, load_policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = ("sockscope guard --policy FILE --daemon NAME --port PORT[/tcp|/udp] ... [--dry-run]\n"
               "       sockscope guard --show | --remove")
    p.description = ("Compile the address rules of a policy for the given ports into an nftables table "
                     "of its own (named sets for IPv4 and IPv6, applied in one transaction): a refused "
                     "client gets no SYN-ACK and no RST. --remove deletes exactly that table; a table "
                     "of that name that sockscope did not make is never replaced, shown or deleted.")
    add_policy_arguments(p)
    p.add_argument("--daemon", metavar="NAME", help="daemon name the rules are matched against")
    p.add_argument("--port", action="append", metavar="PORT[/tcp|/udp]", help="guarded port (repeatable)")
    p.add_argument("--table", default="sockscope_guard", metavar="NAME",
                   help="nftables table (family inet) to use (default: sockscope_guard)")
    p.add_argument("--force", action="store_true",
                   help="apply even when no rule of the policy names the daemon (a misspelt name "
                        "would otherwise drop every client)")
    act = p.add_mutually_exclusive_group()
    act.add_argument("--show", action="store_true", help="print the guard in force")
    act.add_argument("--remove", action="store_true", help="delete the guard table")
    act.add_argument("--dry-run", action="store_true", help="print the nft script instead of applying it")


def run(args: argparse.Namespace) -> int:
    from sockscope.policy import guard
    from sockscope.policy.nftables import check_table_name, compile_guard, daemon_problem, parse_port

    table = check_table_name(args.table)
    if args.show or args.remove:
        if args.policy or args.hosts_allow or args.hosts_deny or args.port or args.daemon or args.force:
            raise UsageError("--show and --remove take no policy, daemon or ports")
        if args.show:
            text = guard.show(table)
            if text is None:
                sys.stderr.write(f"sockscope guard: no guard in force (no table inet {table})\n")
                return 1
            output.write(text)
            return 0
        if not guard.remove(table):
            sys.stderr.write(f"sockscope guard: no guard to remove (no table inet {table})\n")
        return 0
    if not args.daemon or not args.port:
        raise UsageError("give --daemon NAME and at least one --port")
    policy = load_policy(args)
    assert policy is not None
    script = compile_guard(policy, args.daemon, [parse_port(p) for p in args.port], table)
    problem = daemon_problem(policy, args.daemon)
    if problem is not None and not args.force:
        raise UsageError(f"{problem}; check --daemon, or give --force")
    if args.dry_run:
        output.write(script)
        return 0
    guard.apply(script, table)
    return 0
