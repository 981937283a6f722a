"""The error a policy that does not parse raises, and the words the parser reserves."""

from __future__ import annotations

from sockscope.errors import UsageError

PEER_KEYWORDS = ("user", "uid", "group", "gid", "exe")


class PolicyError(UsageError):
    """A policy that does not parse: ``file:line:column: what``."""

    def __init__(self, filename: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{filename}:{line}:{column}: {message}")
        self.filename, self.line, self.column, self.detail = filename, line, column, message
