"""Errors the API raises on purpose. The CLI prints their message on one line
and exits with ``exit_status``; anything else is a bug.

Each also derives from the standard exception a Python programmer would catch
for the same failure: bad arguments are a ``ValueError``, a missing privilege a
``PermissionError``, so ``except ValueError`` around an API call works as it
does around the standard library's own.
"""

from __future__ import annotations


class SockscopeError(Exception):
    """A failure with a message fit for a user (no traceback needed)."""

    exit_status = 1


class UsageError(SockscopeError, ValueError):
    """Bad input from the user: unknown namespace, a filter that does not parse..."""

    exit_status = 2


class PermissionNeeded(SockscopeError, PermissionError):
    """The operation needs a capability the caller lacks (e.g. CAP_NET_ADMIN)."""

    exit_status = 1

    def __str__(self) -> str:
        # OSError's own __str__ would print "[Errno None] ..." style text for some
        # argument shapes; the message is always the first argument here.
        return str(self.args[0]) if self.args else ""
