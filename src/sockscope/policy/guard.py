"""Install, show and remove the guard table with the nft command (one transaction)."""

from __future__ import annotations

import subprocess

from sockscope.errors import PermissionNeeded, SockscopeError
from sockscope.platform.linux import run_sbin_tool

from .nftables import check_table_name


def _nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_sbin_tool("nft", args, package="nftables", script=script, timeout=60)


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> SockscopeError:
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    first = detail[0] if detail else f"exit status {proc.returncode}"
    if "Operation not permitted" in proc.stderr:
        return PermissionNeeded(f"{what}: needs CAP_NET_ADMIN (run as root)")
    return SockscopeError(f"{what}: nft: {first}")


def apply(script: str) -> None:
    """Load the script as one transaction: all of it or nothing."""
    proc = _nft("-f", "-", script=script)
    if proc.returncode != 0:
        raise _fail("guard not applied", proc)


def show(table: str) -> str | None:
    """The table as nft lists it, None if no guard is in force."""
    check_table_name(table)
    proc = _nft("list", "table", "inet", table)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return None
        raise _fail("cannot list the guard", proc)
    return proc.stdout


def remove(table: str) -> bool:
    """Delete exactly our table; False if it was not there."""
    check_table_name(table)
    proc = _nft("delete", "table", "inet", table)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return False
        raise _fail("guard not removed", proc)
    return True
