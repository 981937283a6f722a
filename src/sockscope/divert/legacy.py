"""What older sockscope versions left: their ``--rule`` language and their iptables chains.

Until divert took tcpdump filters, ``--rule`` was a language of its own (below). A rule
written in it is not thrown away with libpcap's "syntax error": `suggest` parses it
and says how to write the same selection now (`sockscope.divert.rule`)::

    rule   := term (["and"] term)*
    term   := "ip" | "ip6"                              family (default: both)
            | "tcp" | "udp" | "udplite" | "sctp" | "icmp" | "icmp6"
            | "input" | "output" | "forward"            hooks (default: input output)
            | ("sport" | "dport" | "port") [op] PORT[-PORT]
            | ("saddr" | "daddr" | "host") [op] ADDRESS[/PREFIX]
            | ("iif" | "oif") [op] IFNAME
            | "mark" [op] NUMBER[/MASK]
    op     := "==" | "!=" | "not" before the keyword

Those versions steered packets with iptables chains ``SOCKSCOPE-DIVERT-*`` in table
``filter``, jumped to from INPUT/OUTPUT/FORWARD, every rule commented ``sockscope
divert pid=P start=T``. A run killed with SIGKILL left them behind (black-holing the
traffic it diverted); `clean_iptables_leftovers` removes those of dead owners.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from sockscope.capture.bpf import compile_filter
from sockscope.errors import PermissionNeeded, SockscopeError, UsageError

PROTOCOLS = {
    "tcp": "tcp",
    "udp": "udp",
    "udplite": "udplite",
    "sctp": "sctp",
    "icmp": "icmp",
    "icmp6": "ipv6-icmp",
    "icmpv6": "ipv6-icmp",
}
HOOKS = ("input", "output", "forward")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@+-]{1,15}")
_PORT = re.compile(r"(\d{1,5})(?:[-:](\d{1,5}))?")


@dataclass(frozen=True)
class Term:
    key: str  # sport dport saddr daddr iif oif mark
    value: str
    negated: bool = False


@dataclass
class Rule:
    """A parsed old ``--rule``: families (4, 6), hooks, protocol and match terms."""

    text: str
    families: tuple[int, ...] = (4, 6)
    hooks: tuple[str, ...] = ("input", "output")
    protocol: str | None = None
    terms: list[Term] = field(default_factory=list)
    either: list[Term] = field(default_factory=list)  # port/host: either side

    def translate(self) -> str:
        """The same selection in today's options: a tcpdump filter and flags."""
        words: list[str] = []
        if self.protocol == "udplite":
            if any(t.key in ("sport", "dport", "port") for t in self.terms + self.either):
                raise UsageError("tcpdump's language has no UDP-Lite ports")
            words.append("(ip proto 136 or ip6 proto 136)")
        elif self.protocol is not None:
            words.append(self.protocol)
        elif any(t.key in ("sport", "dport", "port") for t in self.terms + self.either):
            words.append("(tcp or udp)")
        if len(self.families) == 1 and self.protocol not in ("icmp", "icmp6"):
            words.insert(0, "ip6" if self.families == (6,) else "ip")
        flags: list[str] = []
        for term in self.terms + self.either:
            if term.key in ("iif", "oif", "mark"):
                flag = {"iif": "-i", "oif": "-o", "mark": "--mark"}[term.key]
                flags += [flag, shlex.quote(("!" if term.negated else "") + term.value)]
            else:
                words.append(("not " if term.negated else "") + _filter_term(term))
        keys = {t.key for t in self.terms}
        implied = tuple(h for h in ("input", "output") if (h, "oif" if h == "input" else "iif") not in {
            (h, k) for k in keys
        })
        if self.hooks != implied:
            for hook in self.hooks:
                flags += ["--hook", hook]
        return " ".join(["--rule", shlex.quote(" and ".join(words)), *flags])


def _filter_term(term: Term) -> str:
    side = {"sport": "src ", "dport": "dst ", "saddr": "src ", "daddr": "dst "}.get(term.key, "")
    if term.key in ("sport", "dport", "port"):
        low, _, high = term.value.replace(":", "-").partition("-")
        return f"{side}portrange {low}-{high}" if high else f"{side}port {low}"
    network = ipaddress.ip_network(term.value)
    if network.prefixlen == network.max_prefixlen:
        return f"{side}host {network.network_address}"
    return f"{side}net {network}"


# Words only the old language had: text without any is a (bad) tcpdump filter.
_OLD_WORDS = {"sport", "dport", "saddr", "daddr", "iif", "oif", "mark", "input", "output", "forward"}
_OLD_WORDS |= {"udplite", "==", "!=", "ip4", "ipv4", "ipv6", "icmpv6"}


def suggest(text: str) -> str | None:
    """How to write ``text`` now ("write --rule ..."), if it is in the old language."""
    if not _OLD_WORDS & set(text.replace("==", " == ").replace("!=", " != ").lower().split()):
        return None
    try:
        suggestion = parse_rule(text).translate()
        compile_filter(shlex.split(suggestion)[1], 101)  # only a filter that works
    except UsageError:
        return None
    return "write " + suggestion


def parse_rule(text: str) -> Rule:
    """Parse a ``--rule``; UsageError with the offending word if it does not parse."""
    words = text.replace("==", " ").split()
    if not words:
        raise UsageError("empty --rule: give at least one match, e.g. 'udp dport 5000'")
    rule = Rule(text)
    families: set[int] = set()
    hooks: list[str] = []
    i = 0
    negate = False

    def fail(why: str) -> UsageError:
        return UsageError(f"cannot parse --rule {text!r}: {why} (see `sockscope divert --help`)")

    while i < len(words):
        word = words[i].lower()
        i += 1
        if word in ("and", "&&"):
            continue
        if word in ("not", "!"):
            negate = True
            continue
        if word in ("ip", "ip4", "ipv4", "ip6", "ipv6"):
            families.add(6 if "6" in word else 4)
        elif word in PROTOCOLS:
            if rule.protocol is not None:
                raise fail(f"two protocols ({rule.protocol}, {word}); divert one protocol per rule")
            rule.protocol = "icmp6" if word == "icmpv6" else word
        elif word in HOOKS:
            hooks.append(word)
        elif word in ("sport", "dport", "port", "saddr", "daddr", "src", "dst", "host", "iif", "oif", "mark"):
            key = {"src": "saddr", "dst": "daddr"}.get(word, word)
            if i < len(words) and words[i] == "!=":
                negate = not negate
                i += 1
            if i >= len(words):
                raise fail(f"{word!r} needs a value")
            value = _check_value(key, words[i], fail)
            i += 1
            term = Term(key, value, negate)
            (rule.either if key in ("port", "host") else rule.terms).append(term)
        else:
            raise fail(f"unknown word {words[i - 1]!r}")
        if negate and word not in (
            "sport",
            "dport",
            "port",
            "saddr",
            "daddr",
            "src",
            "dst",
            "host",
            "iif",
            "oif",
            "mark",
        ):
            raise fail(f"'not' cannot apply to {word!r}")
        negate = False
    if negate:
        raise fail("'not' at the end")
    if len([t for t in rule.either if not t.negated]) > 1:
        raise fail("at most one of 'port'/'host' per rule")
    keys = [t.key for t in rule.terms]
    for key in set(keys):
        if keys.count(key) > 1:
            raise fail(f"{key!r} given twice")
    _resolve_families(rule, families, fail)
    _resolve_hooks(rule, hooks, fail)
    return rule


def _check_value(key: str, value: str, fail: type[UsageError] | object) -> str:
    assert callable(fail)
    if key in ("sport", "dport", "port"):
        m = _PORT.fullmatch(value)
        if m is None or any(int(p) > 65535 for p in m.groups() if p):
            raise fail(f"bad port {value!r}: want N or N-M, 0..65535")
        return value
    if key in ("saddr", "daddr", "host"):
        try:
            return str(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise fail(f"bad address {value!r}: want an IPv4/IPv6 address or network") from None
    if key in ("iif", "oif"):
        if not _IFNAME.fullmatch(value):
            raise fail(f"bad interface name {value!r}")
        return value
    try:
        parts = [int(p, 0) for p in value.split("/")]
    except ValueError:
        raise fail(f"bad mark {value!r}: want NUMBER or NUMBER/MASK") from None
    if len(parts) > 2 or any(not 0 <= p <= 0xFFFFFFFF for p in parts):
        raise fail(f"bad mark {value!r}: want NUMBER or NUMBER/MASK, 32 bits")
    return "/".join(f"{p:#x}" for p in parts)


def _resolve_families(rule: Rule, families: set[int], fail: object) -> None:
    assert callable(fail)
    implied: set[int] = set()
    for term in rule.terms + rule.either:
        if term.key in ("saddr", "daddr", "host"):
            implied.add(ipaddress.ip_network(term.value).version)
    if rule.protocol == "icmp":
        implied.add(4)
    elif rule.protocol == "icmp6":
        implied.add(6)
    if len(implied) > 1 or (families and implied and not implied <= families):
        raise fail("it mixes IPv4 and IPv6 (addresses, icmp/icmp6, ip/ip6)")
    chosen = implied or families or {4, 6}
    rule.families = tuple(sorted(chosen))


def _resolve_hooks(rule: Rule, hooks: list[str], fail: object) -> None:
    assert callable(fail)
    keys = {t.key for t in rule.terms}
    if hooks:
        if "iif" in keys and "output" in hooks:
            raise fail("'iif' does not apply to the output hook")
        if "oif" in keys and "input" in hooks:
            raise fail("'oif' does not apply to the input hook")
        rule.hooks = tuple(dict.fromkeys(hooks))
        return
    chosen = ["input", "output"]
    if "iif" in keys:
        chosen.remove("output")
    if "oif" in keys:
        chosen.remove("input")
    if not chosen:
        raise fail("'iif' with 'oif' only makes sense on the forward hook: add 'forward'")
    rule.hooks = tuple(chosen)


CHAIN_PREFIX = "SOCKSCOPE-DIVERT-"
_COMMENT = re.compile(r'--comment "?sockscope divert pid=(\d+) start=(\d+)"?')
_JUMP = re.compile(r"^-A (INPUT|OUTPUT|FORWARD) (.*)-j (" + re.escape(CHAIN_PREFIX) + r"\S+)\s*$")


def clean_iptables_leftovers(is_dead: Callable[[int, int], bool]) -> list[str]:
    """Remove old versions' chains whose owner ``is_dead(pid, start)``; their names.

    Reads ``iptables-save -t filter``, which creates nothing; writes only when there
    is something of ours to remove.
    """
    from sockscope.platform.linux import run_sbin_tool, sbin_tool

    removed = []
    for prefix in ("ip", "ip6"):
        if sbin_tool(f"{prefix}tables-save") is None:
            continue
        saved = run_sbin_tool(f"{prefix}tables-save", ["-t", "filter"], package="iptables", timeout=30)
        if saved.returncode != 0:
            _check_permission(saved.stderr)
            continue  # no filter table here: nothing of ours either
        stale = _stale_chains(saved.stdout, is_dead)
        if not stale:
            continue
        lines = ["*filter"]
        for jumps in stale.values():
            lines += jumps
        for chain in stale:
            lines += [f"-F {chain}", f"-X {chain}"]
        script = "\n".join([*lines, "COMMIT"]) + "\n"
        proc = run_sbin_tool(
            f"{prefix}tables-restore", ["--noflush"], package="iptables", script=script, timeout=30
        )
        if proc.returncode != 0:
            _check_permission(proc.stderr)
            detail = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
            raise SockscopeError(f"{prefix}tables-restore failed: {detail}")
        removed += [f"{prefix} filter {chain}" for chain in stale]
    return removed


def _stale_chains(saved: str, is_dead: Callable[[int, int], bool]) -> dict[str, list[str]]:
    """Our chains in an iptables-save listing whose owner is dead -> their jumps' removal."""
    owners: dict[str, tuple[int, int]] = {}
    jumps: dict[str, list[str]] = {}
    chains = []
    for line in saved.splitlines():
        if line.startswith(":" + CHAIN_PREFIX):
            chains.append(line[1:].split()[0])
            continue
        m = _COMMENT.search(line)
        if m is None or not line.startswith("-A "):
            continue
        jump = _JUMP.match(line)
        if jump:
            jumps.setdefault(jump.group(3), []).append("-D" + line[2:])
            owners[jump.group(3)] = (int(m.group(1)), int(m.group(2)))
        else:
            owners.setdefault(line.split()[1], (int(m.group(1)), int(m.group(2))))
    return {c: jumps.get(c, []) for c in chains if c in owners and is_dead(*owners[c])}


def _check_permission(stderr: str) -> None:
    if "Permission denied" in stderr or "must be root" in stderr or "not permitted" in stderr:
        raise PermissionNeeded("divert --cleanup needs CAP_NET_ADMIN (run as root)")
