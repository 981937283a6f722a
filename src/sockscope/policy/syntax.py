"""Sans-IO parser of policy files: hosts_access(5) rules and the one-file
hosts_options(5) style where each rule ends in ``: allow`` or ``: deny``.

``parse(text, filename, style)`` returns `Rule`s or raises `PolicyError`
naming file, line and column; a file either parses whole or not at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .client_patterns import client_pattern
from .patterns import DaemonList, PatternList
from .syntax_errors import PEER_KEYWORDS, PolicyError

__all__ = ["PolicyError", "Rule", "Style", "client_pattern", "parse"]

Style = Literal["policy", "allow", "deny"]
Action = Literal["allow", "deny"]
_DAEMON_RE = re.compile(r"[A-Za-z0-9_.+-]+")


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


