"""Install, show and remove the guard table with the nft command (one transaction).

Only a table sockscope made is ever replaced, shown or deleted: one that carries
the guard's comment (`nftables.MARKER`). A table of the same name without it is an
administrator's, and is refused with one line. (Between that look and the
transaction another program could make the table; nft offers no conditional
replace, and the window is one command long.)"""

from __future__ import annotations

import subprocess

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError
from sockscope.platform.linux import run_sbin_tool

from .nftables import MARKER, check_table_name


def _nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_sbin_tool("nft", args, package="nftables", script=script, timeout=60)


def _fail(what: str, proc: subprocess.CompletedProcess[str]) -> SockscopeError:
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    first = detail[0] if detail else f"exit status {proc.returncode}"
    if "Operation not permitted" in proc.stderr:
        return PermissionNeeded(f"{what}: needs CAP_NET_ADMIN (run as root)")
    return SockscopeError(f"{what}: nft: {first}")


def _listing(table: str, doing: str) -> str | None:
    """``nft list table inet TABLE`` if it exists and sockscope made it; None if it
    does not exist; an error naming it if it is someone else's."""
    check_table_name(table)
    proc = _nft("list", "table", "inet", table)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return None
        raise _fail(f"cannot list table inet {table}", proc)
    head = proc.stdout.split("\n", 2)[1:2]
    if not head or not head[0].strip().startswith(f'comment "{MARKER}'):
        raise UsageError(f"table inet {table} was not made by sockscope guard: not {doing} it "
                         "(choose another --table)")
    return proc.stdout


def apply(script: str, table: str) -> None:
    """Load the script as one transaction: all of it or nothing (replacing an older
    guard of the same table, never a table sockscope did not make)."""
    _listing(table, "replacing")
    proc = _nft("-f", "-", script=script)
    if proc.returncode != 0:
        raise _fail("guard not applied", proc)


def show(table: str) -> str | None:
    """The table as nft lists it, None if no guard is in force."""
    return _listing(table, "showing")


def remove(table: str) -> bool:
    """Delete exactly our table; False if it was not there."""
    if _listing(table, "removing") is None:
        return False
    proc = _nft("delete", "table", "inet", table)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return False
        raise _fail("guard not removed", proc)
    return True
