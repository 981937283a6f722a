"""``sockscope check``: which rule of a policy decides for a client (tcpdmatch)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from sockscope.errors import UsageError

from . import output

if TYPE_CHECKING:
    from sockscope.policy import Policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = "sockscope check (--policy FILE | --hosts-allow FILE --hosts-deny FILE) DAEMON CLIENT"
    p.description = ("Explain which rule decides whether CLIENT may use DAEMON, as tcpdmatch does. "
                     "CLIENT is an address, a host name, user:NAME, uid:N or pid:N (the credentials "
                     "and executable of a running process). Exit status 0: allowed, 1: refused.")
    add_policy_arguments(p)
    p.add_argument("daemon", metavar="DAEMON", help="daemon (service) name the rules are written for")
    p.add_argument("client", metavar="CLIENT", help="address, host name, user:NAME, uid:N or pid:N")
    p.add_argument("--json", action="store_true", help="one JSON object")


def add_policy_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("policy")
    group.add_argument("--policy", metavar="FILE",
                       help="one policy file; each rule ends in ': allow' or ': deny'; no match refuses")
    group.add_argument("--hosts-allow", metavar="FILE", help="hosts.allow (classic pair; no match allows)")
    group.add_argument("--hosts-deny", metavar="FILE", help="hosts.deny (classic pair)")


def load_policy(args: argparse.Namespace, required: bool = True) -> Policy | None:
    from sockscope.policy import Policy

    if args.policy is None and args.hosts_allow is None and args.hosts_deny is None:
        if required:
            raise UsageError("give --policy FILE or --hosts-allow FILE --hosts-deny FILE")
        return None
    return Policy.load(args.policy, hosts_allow=args.hosts_allow, hosts_deny=args.hosts_deny)


def run(args: argparse.Namespace) -> int:
    from sockscope.policy.client_spec import client_from_spec

    policy = load_policy(args)
    assert policy is not None
    client = client_from_spec(args.client)
    decision = policy.decide(args.daemon, client)
    if args.json:
        output.write(_json(decision.to_dict()))
    else:
        rule = decision.rule
        lines = [
            f"client:   {args.client}" + (f" ({decision.client})" if decision.client != args.client else ""),
            f"server:   process {args.daemon}",
            f"matched:  {rule.filename} line {rule.line}: {rule.text}" if rule else
            f"matched:  nothing: {decision.reason}",
            f"access:   {'granted' if decision.allowed else 'denied'}",
        ]
        output.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0 if decision.allowed else 1


def _json(obj: dict[str, object]) -> str:
    import json

    return json.dumps(obj) + "\n"
