"""Compile the address rules of a policy into an nftables ruleset (sans-IO).

The guard lives in its own table (``inet sockscope_guard`` by default). Packets
to the guarded ports jump to one chain that replays the policy in order:
consecutive rules with the same verdict share a named interval set per family
(order inside such a run cannot change the outcome), rules with EXCEPT or a
non-prefix netmask get a line of their own, and the policy's default closes
the chain. A refused client is dropped: no SYN-ACK, no RST, no ICMP error.
The whole table is replaced in one ``nft -f`` transaction.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from sockscope.errors import UsageError

from .patterns import All, Exe, Gid, Netmask, Network, Pattern, PatternList, Uid
from .policy import Policy

Proto = Literal["tcp", "udp"]
DEFAULT_TABLE = "sockscope_guard"
# The comment every guard table carries: what tells a table sockscope made from one
# of the same name an administrator made (never replaced, shown or deleted).
MARKER = "sockscope guard"
_TABLE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_DAEMON_RE = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


@dataclass(frozen=True)
class GuardPort:
    port: int
    proto: Proto

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"


def parse_port(text: str) -> GuardPort:
    """``PORT[/tcp|/udp]``, PORT a number or a service name (``ssh``, ``domain/udp``)."""
    from sockscope.services.address import parse_port as port_number

    number, _, proto = text.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in ("tcp", "udp"):
        raise UsageError(f"bad port {text!r}: the protocol is tcp or udp")
    port = port_number(number, proto, text)
    if port == 0:
        raise UsageError(f"bad port {text!r}: want 1-65535 or a service name, then /tcp or /udp")
    return GuardPort(port, proto)  # type: ignore[arg-type]


def check_table_name(name: str) -> str:
    if not _TABLE_RE.fullmatch(name):
        raise UsageError(f"bad table name {name!r}: letters, digits and _, at most 32")
    return name


@dataclass
class _Run:
    verdict: str
    v4: list[str]
    v6: list[str]


def daemon_problem(policy: Policy, daemon: str) -> str | None:
    """Why a guard for ``daemon`` is probably a mistake (a misspelt name), or None:
    no rule applies to it at all, or the policy names daemons and not this one, so
    only its ALL rules and default would decide."""
    key = daemon.lower()
    applies = [rule for rule in policy.rules if rule.daemons.matches(key)]
    verdict = "accept" if policy.default_allow else "drop"
    if not applies:
        return (f"no rule of the policy applies to daemon {daemon!r}: every client would get the "
                f"default ({verdict})")
    named = sorted({name for rule in policy.rules for name in rule.daemons.names})
    if named and key not in named:
        return (f"no rule names daemon {daemon!r} (the policy names {', '.join(named)}): only its ALL "
                "rules and the default would decide")
    return None


def _peer_only(pattern: Pattern) -> bool:
    return isinstance(pattern, Uid | Gid | Exe)


def compile_guard(policy: Policy, daemon: str, ports: list[GuardPort], table: str = DEFAULT_TABLE) -> str:
    """The nft script that installs the guard (it first removes an older one)."""
    if not ports:
        raise UsageError("give at least one --port")
    check_table_name(table)
    if not _DAEMON_RE.fullmatch(daemon):
        raise UsageError(f"bad daemon name {daemon!r}: letters, digits and _ . + - (as in the policy)")
    daemon_key = daemon.lower()
    lines: list[str] = []
    sets: list[str] = []
    run: _Run | None = None
    counter = 0

    def flush() -> None:
        nonlocal run, counter
        if run is None:
            return
        for family, elements in (("ipv4", run.v4), ("ipv6", run.v6)):
            if not elements:
                continue
            name = f"r{counter}_v{family[-1]}"
            sets.append(_set_decl(name, f"{family}_addr", elements))
            lines.append(f"{'ip' if family == 'ipv4' else 'ip6'} saddr @{name} {run.verdict}")
        counter += 1
        run = None

    for rule in policy.rules:
        if not rule.daemons.matches(daemon_key):
            continue
        verdict = "accept" if rule.action == "allow" else "drop"
        clients = rule.clients
        if clients.exclude is not None:
            flush()
            lines.extend(_except_lines(rule.where, clients, verdict, counter, sets))
            counter += 1
            continue
        patterns = [p for p in clients.include if not _peer_only(p)]
        if not patterns:
            continue  # peer rules never match an address
        if any(isinstance(p, All) for p in patterns):
            flush()
            lines.append(f"{verdict}  # {rule.where}")
            break  # nothing after ALL is reachable
        for pattern in patterns:
            if isinstance(pattern, Network):
                if run is None or run.verdict != verdict:
                    flush()
                    run = _Run(verdict, [], [])
                (run.v4 if pattern.network.version == 4 else run.v6).append(str(pattern.network))
            elif isinstance(pattern, Netmask):
                flush()
                lines.append(f"ip saddr & {ipaddress.IPv4Address(pattern.mask)} == "
                             f"{ipaddress.IPv4Address(pattern.address)} {verdict}")
            else:
                raise _not_compilable(rule.where, pattern)
    else:
        flush()
        lines.append("accept  # default: no rule matched" if policy.default_allow
                     else "drop  # default: no rule matched")
    tcp = sorted(p.port for p in ports if p.proto == "tcp")
    udp = sorted(p.port for p in ports if p.proto == "udp")
    out = [f"table inet {table} {{}}", f"delete table inet {table}", f"table inet {table} {{"]
    out.append(f"  comment \"{MARKER}: daemon {daemon}\"")
    for name, items in (("ports_tcp", tcp), ("ports_udp", udp)):
        out.append(f"  set {name} {{ type inet_service;"
                   + (f" elements = {{ {', '.join(map(str, items))} }};" if items else "") + " }")
    out.extend(sets)
    out.append("  chain input {")
    out.append("    type filter hook input priority filter - 5; policy accept;")
    out.append("    ct state established,related accept")
    out.append("    meta l4proto tcp tcp dport @ports_tcp jump decide")
    out.append("    meta l4proto udp udp dport @ports_udp jump decide")
    out.append("  }")
    out.append("  chain decide {")
    out.extend(f"    {line}" for line in lines)
    out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def _set_decl(name: str, kind: str, elements: list[str]) -> str:
    return (f"  set {name} {{ type {kind}; flags interval; auto-merge; "
            f"elements = {{ {', '.join(elements)} }}; }}")


def _except_lines(where: str, clients: PatternList, verdict: str, counter: int, sets: list[str]) -> list[str]:
    """``A EXCEPT B`` as ``saddr in A and saddr not in B``; deeper nesting is refused."""
    exclude = clients.exclude
    assert exclude is not None
    if exclude.exclude is not None:
        raise UsageError(f"{where}: guard cannot compile nested EXCEPT")
    include = [p for p in clients.include if not _peer_only(p)]
    lines = []
    for version, family, match in ((4, "ipv4", "ip"), (6, "ipv6", "ip6")):
        inc = _networks(where, include, version)
        exc = _networks(where, list(exclude.include), version)
        if inc == []:
            continue
        if inc is None:
            cond = f"meta nfproto {family}"
        else:
            cond = f"{match} saddr @x{counter}_in{version}"
            sets.append(_set_decl(f"x{counter}_in{version}", f"{family}_addr", inc))
        if exc:
            sets.append(_set_decl(f"x{counter}_out{version}", f"{family}_addr", exc))
            cond += f" {match} saddr != @x{counter}_out{version}"
        elif exc is None:
            continue  # EXCEPT ALL: never matches
        lines.append(f"{cond} {verdict}")
    return lines


def _networks(where: str, patterns: list[Pattern], version: int) -> list[str] | None:
    """Prefixes of one family; None means ALL."""
    out = []
    for pattern in patterns:
        if isinstance(pattern, All):
            return None
        if isinstance(pattern, Network):
            if pattern.network.version == version:
                out.append(str(pattern.network))
        elif not _peer_only(pattern):
            raise _not_compilable(where, pattern)
    return out


def _not_compilable(where: str, pattern: Pattern) -> UsageError:
    return UsageError(f"{where}: guard compiles addresses only; {pattern.text!r} needs a host name "
                      "lookup, which a packet filter cannot do (enforce it in process with listen --policy)")
