"""The ``--rule`` language: which packets to divert, as a short tcpdump/nft-like match.

Grammar (terms in any order, optionally joined by ``and``; ``!=`` or ``not`` negates)::

    rule   := term (["and"] term)*
    term   := "ip" | "ip6"                              family (default: both)
            | "tcp" | "udp" | "udplite" | "sctp" | "icmp" | "icmp6"
            | "input" | "output" | "forward"            hooks (default: input output)
            | ("sport" | "dport" | "port") [op] PORT[-PORT]
            | ("saddr" | "daddr" | "host") [op] ADDRESS[/PREFIX]
            | ("iif" | "oif") [op] IFNAME
            | "mark" [op] NUMBER[/MASK]
    op     := "==" | "!=" | "not" before the keyword

``port`` and ``host`` mean either side (two firewall rules). Ports without a protocol
mean TCP and UDP. ``iif`` leaves out the output hook, ``oif`` the input hook, unless
hooks are named. Everything here maps one to one onto iptables matches.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from sockscope.errors import UsageError

PROTOCOLS = {
    "tcp": "tcp",
    "udp": "udp",
    "udplite": "udplite",
    "sctp": "sctp",
    "icmp": "icmp",
    "icmp6": "ipv6-icmp",
    "icmpv6": "ipv6-icmp",
}
PORT_PROTOCOLS = ("tcp", "udp", "udplite", "sctp")
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
    """A parsed ``--rule``: families (4, 6), hooks, protocol and match terms."""

    text: str
    families: tuple[int, ...] = (4, 6)
    hooks: tuple[str, ...] = ("input", "output")
    protocol: str | None = None
    terms: list[Term] = field(default_factory=list)
    either: list[Term] = field(default_factory=list)  # port/host: sport-or-dport, saddr-or-daddr

    def alternatives(self) -> list[tuple[str | None, list[Term]]]:
        """(protocol, terms) of each firewall rule this rule becomes (all must be matched
        by one of them): port/host expand to both sides, bare ports to TCP and UDP."""
        protos: list[str | None] = [self.protocol]
        if self.protocol is None and any(
            t.key in ("sport", "dport", "port") for t in self.terms + self.either
        ):
            protos = ["tcp", "udp"]
        sided: list[list[Term]] = [[]]
        for term in self.either:
            sides = ("sport", "dport") if term.key == "port" else ("saddr", "daddr")
            if term.negated:  # "not port 22": neither side, so both negations in one rule
                neither = [Term(side, term.value, True) for side in sides]
                sided = [[*alt, *neither] for alt in sided]
            else:
                sided = [[*alt, Term(side, term.value)] for alt in sided for side in sides]
        return [(proto, self.terms + alt) for proto in protos for alt in sided]

    def variants(self, family: int) -> list[list[str]]:
        """iptables match arguments for one family: one list per firewall rule."""
        out = []
        for proto, terms in self.alternatives():
            args: list[str] = []
            if proto is not None:
                args += ["-p", PROTOCOLS[proto]]
                if proto in PORT_PROTOCOLS:
                    args += ["-m", proto]
            for term in terms:
                args += _term_args(term, family)
            out.append(args)
        return out

    def nft_matches(self, family: int) -> list[str]:
        """nft match expressions for one family (in an ``inet`` table): one per rule."""
        out = []
        for proto, terms in self.alternatives():
            words = [f"meta nfproto {'ipv6' if family == 6 else 'ipv4'}"]
            if proto is not None:
                words.append(f"meta l4proto {PROTOCOLS[proto]}")
            words += [_nft_term(term, family) for term in terms]
            out.append(" ".join(words))
        return out


def _nft_term(term: Term, family: int) -> str:
    op = "!= " if term.negated else ""
    if term.key in ("sport", "dport"):
        return f"th {term.key} {op}{term.value}"
    if term.key in ("saddr", "daddr"):
        return f"{'ip6' if family == 6 else 'ip'} {term.key} {op}{term.value}"
    if term.key in ("iif", "oif"):
        return f'{term.key}name {op}"{term.value}"'
    if term.key == "mark":
        value, _, mask = term.value.partition("/")
        return f"meta mark and {mask} {op or '== '}{value}" if mask else f"meta mark {op}{value}"
    raise AssertionError(term.key)


def _term_args(term: Term, family: int) -> list[str]:
    neg = ["!"] if term.negated else []
    if term.key in ("sport", "dport"):
        return [*neg, f"--{term.key}", term.value.replace("-", ":")]
    if term.key in ("saddr", "daddr"):
        return [*neg, "-s" if term.key == "saddr" else "-d", term.value]
    if term.key in ("iif", "oif"):
        return [*neg, "-i" if term.key == "iif" else "-o", term.value]
    if term.key == "mark":
        return ["-m", "mark", *neg, "--mark", term.value]
    raise AssertionError(term.key)


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
