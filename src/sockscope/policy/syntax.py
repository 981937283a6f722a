"""Sans-IO parser of policy files: hosts_access(5) rules and the one-file
hosts_options(5) style where each rule ends in ``: allow`` or ``: deny``.

``parse(text, filename, style)`` returns `Rule`s or raises `PolicyError`
naming file, line and column; a file either parses whole or not at all.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sockscope.errors import UsageError

from .patterns import (
    All,
    DaemonList,
    DomainSuffix,
    Exe,
    Gid,
    HostNamePattern,
    Known,
    Local,
    Netmask,
    Network,
    Pattern,
    PatternList,
    Uid,
)

Style = Literal["policy", "allow", "deny"]
Action = Literal["allow", "deny"]
PEER_KEYWORDS = ("user", "uid", "group", "gid", "exe")
Fail = Callable[[str], "PolicyError"]
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_*?][A-Za-z0-9_.*?-]*")
_DAEMON_RE = re.compile(r"[A-Za-z0-9_.+-]+")
_DOTTED_PREFIX_RE = re.compile(r"(\d{1,3}\.){1,3}")


class PolicyError(UsageError):
    """A policy that does not parse: ``file:line:column: what``."""

    def __init__(self, filename: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{filename}:{line}:{column}: {message}")
        self.filename, self.line, self.column, self.detail = filename, line, column, message


@dataclass(frozen=True)
class Rule:
    daemons: DaemonList
    clients: PatternList
    action: Action
    filename: str
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.filename}:{self.line}"


@dataclass(frozen=True)
class _Token:
    text: str
    line: int
    column: int


class _LogicalLine:
    """Physical lines joined at backslash-newline, each character keeping its position."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.chars: list[str] = []
        self.where: list[tuple[int, int]] = []

    def add(self, text: str, line: int) -> None:
        for col, ch in enumerate(text, 1):
            self.chars.append(ch)
            self.where.append((line, col))

    def error(self, index: int, message: str) -> PolicyError:
        if not self.where:
            return PolicyError(self.filename, 0, 0, message)
        if index < len(self.where):
            line, col = self.where[index]
        else:
            line, col = self.where[-1]
            col += 1
        if index and index == self.end() and index < len(self.where):
            line, col = self.where[index - 1]
            col += 1
        return PolicyError(self.filename, line, col, message)

    def end(self) -> int:
        """Index just past the last non-blank character (where a missing part belongs)."""
        n = len(self.chars)
        while n and self.chars[n - 1].isspace():
            n -= 1
        return n

    def fields(self) -> list[list[_Token]]:
        """Split at ':' (outside brackets and peer patterns), then into tokens."""
        fields: list[list[_Token]] = [[]]
        token: list[str] = []
        start = 0
        bracket = False
        chars = self.chars

        def flush() -> None:
            if token:
                line, col = self.where[start]
                fields[-1].append(_Token("".join(token), line, col))
                token.clear()

        for i, ch in enumerate(chars):
            if ch == "[":
                bracket = True
            elif ch == "]":
                bracket = False
            if ch == ":" and not bracket:
                word = "".join(token).lower()
                nxt = chars[i + 1] if i + 1 < len(chars) else " "
                if word in PEER_KEYWORDS and not nxt.isspace() and nxt not in ",:":
                    token.append(ch)
                    continue
                flush()
                fields.append([])
                continue
            if ch.isspace() or ch == ",":
                flush()
                continue
            if not token:
                start = i
            token.append(ch)
        flush()
        return fields


def parse(text: str, filename: str, style: Style = "policy") -> list[Rule]:
    rules: list[Rule] = []
    logical: _LogicalLine | None = None
    first_line = 0
    raw: list[str] = []
    for number, physical in enumerate(text.splitlines(), 1):
        if logical is None:
            logical, first_line, raw = _LogicalLine(filename), number, []
        stripped = physical.rstrip()
        continued = stripped.endswith("\\")
        body = stripped[:-1] if continued else stripped
        # '#' starts a comment only at the beginning of a line, as in tcp_wrappers.
        if not (body.lstrip().startswith("#") and not logical.chars):
            logical.add(body + " ", number)
            raw.append(body.strip())
        if continued:
            continue
        if logical.chars and "".join(logical.chars).strip():
            rules.append(_parse_rule(logical, first_line, " ".join(r for r in raw if r), style))
        logical = None
    if logical is not None and logical.chars and "".join(logical.chars).strip():
        rules.append(_parse_rule(logical, first_line, " ".join(raw), style))
    return rules


def _parse_rule(logical: _LogicalLine, line: int, text: str, style: Style) -> Rule:
    fields = logical.fields()
    if len(fields) < 2:
        raise logical.error(logical.end(), "expected 'daemon_list : client_list'")
    if not fields[0]:
        raise logical.error(0, "empty daemon list")
    if not fields[1]:
        raise logical.error(_end_of(logical, fields[0]), "empty client list")
    action: Action | None = "allow" if style == "allow" else "deny" if style == "deny" else None
    for option in fields[2:]:
        if len(option) != 1 or option[0].text.lower() not in ("allow", "deny"):
            where = option[0] if option else None
            what = " ".join(t.text for t in option) or "nothing"
            msg = f"unsupported option {what!r}: sockscope knows ': allow' and ': deny'"
            if where is None:
                raise logical.error(logical.end(), msg)
            raise PolicyError(logical.filename, where.line, where.column, msg)
    if len(fields) > 3:
        tok = fields[3][0]
        raise PolicyError(logical.filename, tok.line, tok.column, "more than one ': allow'/': deny'")
    if len(fields) == 3:
        action = "allow" if fields[2][0].text.lower() == "allow" else "deny"
    if action is None:
        raise logical.error(logical.end(), "a rule must end in ': allow' or ': deny'")
    daemons = _daemon_list(fields[0], logical.filename)
    clients = _client_list(fields[1], logical.filename)
    return Rule(daemons, clients, action, logical.filename, line, text)


def _end_of(logical: _LogicalLine, tokens: list[_Token]) -> int:
    last = tokens[-1]
    return logical.where.index((last.line, last.column)) + len(last.text)


def _split_except(tokens: list[_Token], filename: str) -> tuple[list[_Token], list[_Token] | None]:
    for i, tok in enumerate(tokens):
        if tok.text.upper() == "EXCEPT":
            if i == 0:
                raise PolicyError(filename, tok.line, tok.column, "EXCEPT needs a list before it")
            if i == len(tokens) - 1:
                raise PolicyError(filename, tok.line, tok.column, "EXCEPT needs a list after it")
            return tokens[:i], tokens[i + 1 :]
    return tokens, None


def _daemon_list(tokens: list[_Token], filename: str) -> DaemonList:
    include, rest = _split_except(tokens, filename)
    names: set[str] = set()
    any_daemon = False
    for tok in include:
        if tok.text.upper() == "ALL":
            any_daemon = True
        elif "@" in tok.text:
            raise PolicyError(filename, tok.line, tok.column,
                              f"daemon@host patterns are not supported: {tok.text!r}")
        elif _DAEMON_RE.fullmatch(tok.text):
            names.add(tok.text.lower())
        else:
            raise PolicyError(filename, tok.line, tok.column, f"bad daemon name {tok.text!r}")
    exclude = _daemon_list(rest, filename) if rest is not None else None
    return DaemonList(frozenset(names), any_daemon, exclude)


def _client_list(tokens: list[_Token], filename: str) -> PatternList:
    include, rest = _split_except(tokens, filename)
    patterns = tuple(client_pattern(tok.text, filename, tok.line, tok.column) for tok in include)
    exclude = _client_list(rest, filename) if rest is not None else None
    return PatternList(patterns, exclude)


def client_pattern(text: str, filename: str = "<pattern>", line: int = 1, column: int = 1) -> Pattern:
    """One client pattern, checked: unknown users, bad addresses and the like raise PolicyError."""

    def fail(message: str) -> PolicyError:
        return PolicyError(filename, line, column, message)

    upper = text.upper()
    if upper == "ALL":
        return All()
    if upper == "LOCAL":
        return Local()
    if upper in ("KNOWN", "UNKNOWN", "PARANOID"):
        return Known(upper)
    keyword, sep, value = text.partition(":")
    if sep and keyword.lower() in PEER_KEYWORDS:
        return _peer_pattern(keyword.lower(), value, text, fail)
    if text.startswith("["):
        return _v6_pattern(text, fail)
    if "/" in text:
        if text.startswith("/"):
            raise fail(f"pattern files are not supported: {text!r}")
        return _v4_net_pattern(text, fail)
    if "@" in text:
        raise fail(f"user@host and @netgroup patterns are not supported: {text!r}")
    if _DOTTED_PREFIX_RE.fullmatch(text):
        octets = [int(o) for o in text.rstrip(".").split(".")]
        if any(o > 255 for o in octets):
            raise fail(f"bad address prefix {text!r}")
        plen = 8 * len(octets)
        base = ".".join(str(o) for o in octets + [0] * (4 - len(octets)))
        return Network(text, ipaddress.IPv4Network(f"{base}/{plen}"))
    if re.fullmatch(r"[\d.]+", text):
        try:
            return Network(text, ipaddress.IPv4Network(f"{ipaddress.IPv4Address(text)}/32"))
        except ValueError:
            raise fail(f"bad IPv4 address {text!r}") from None
    if ":" in text:
        raise fail(f"IPv6 addresses go in brackets: [{text}]")
    if text.startswith("."):
        if not _HOSTNAME_RE.fullmatch(text[1:]):
            raise fail(f"bad domain {text!r}")
        return DomainSuffix(text)
    if not _HOSTNAME_RE.fullmatch(text):
        raise fail(f"bad host pattern {text!r}")
    return HostNamePattern(text)


def _peer_pattern(keyword: str, value: str, text: str, fail: Fail) -> Pattern:
    err = fail
    if not value:
        raise err(f"{keyword}: needs a value")
    if keyword in ("uid", "gid"):
        if not value.isdigit():
            raise err(f"{keyword}: wants a number, got {value!r}")
        return Uid(text, int(value)) if keyword == "uid" else Gid(text, int(value))
    if keyword == "user":
        try:
            return Uid(text, pwd.getpwnam(value).pw_uid)
        except KeyError:
            raise err(f"unknown user {value!r}") from None
    if keyword == "group":
        try:
            group = grp.getgrnam(value)
        except KeyError:
            raise err(f"unknown group {value!r}") from None
        members = set()
        for name in group.gr_mem:
            try:
                members.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                continue  # a member without a passwd entry cannot connect as anyone
        return Gid(text, group.gr_gid, frozenset(members))
    if not value.startswith("/"):
        raise err(f"exe: wants an absolute path, got {value!r}")
    # The kernel reports the resolved path of a running executable.
    return Exe(text, os.path.realpath(value))


def _v6_pattern(text: str, fail: Fail) -> Pattern:
    m = re.fullmatch(r"\[([^\]]*)\](?:/(\d+))?", text)
    if m is None:
        raise fail(f"bad IPv6 pattern {text!r} (want [addr] or [addr]/len)")
    try:
        address = ipaddress.IPv6Address(m.group(1))
    except ValueError:
        try:
            ipaddress.IPv4Address(m.group(1))
        except ValueError:
            raise fail(f"bad IPv6 address {m.group(1)!r}") from None
        raise fail(f"{m.group(1)} is an IPv4 address: write it without brackets") from None
    plen = int(m.group(2)) if m.group(2) is not None else 128
    if plen > 128:
        raise fail(f"IPv6 prefix length {plen} is over 128")
    return Network(text, _network(address, plen, text, fail))


def _v4_net_pattern(text: str, fail: Fail) -> Pattern:
    addr_text, _, mask_text = text.partition("/")
    try:
        address = ipaddress.IPv4Address(addr_text)
    except ValueError:
        if ":" in addr_text:
            raise fail(f"IPv6 networks go in brackets: [{addr_text}]/{mask_text}") from None
        raise fail(f"bad IPv4 address {addr_text!r}") from None
    if mask_text.isdigit():
        plen = int(mask_text)
        if plen > 32:
            raise fail(f"IPv4 prefix length {plen} is over 32")
        return Network(text, _network(address, plen, text, fail))
    try:
        mask = int(ipaddress.IPv4Address(mask_text))
    except ValueError:
        raise fail(f"bad netmask {mask_text!r}") from None
    if int(address) & ~mask & 0xFFFFFFFF:
        raise fail(f"{text} has host bits set outside the mask")
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1) == 0:  # contiguous: an ordinary prefix
        return Network(text, ipaddress.IPv4Network(f"{address}/{32 - inverted.bit_length()}"))
    return Netmask(text, int(address), mask)


def _network(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, plen: int, text: str, fail: Fail
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(f"{address}/{plen}")
    except ValueError:
        net = ipaddress.ip_network(f"{address}/{plen}", strict=False)
        raise fail(f"{text} has host bits set (did you mean {net}?)") from None
