"""Errors the API raises on purpose. The CLI prints their message on one line
and exits with ``exit_status``; anything else is a bug."""

from __future__ import annotations


class SockscopeError(Exception):
    """A failure with a message fit for a user (no traceback needed)."""

    exit_status = 1


class UsageError(SockscopeError):
    """Bad input from the user: unknown namespace, a filter that does not parse..."""

    exit_status = 2


class PermissionNeeded(SockscopeError):
    """The operation needs a capability the caller lacks (e.g. CAP_NET_ADMIN)."""

    exit_status = 1
