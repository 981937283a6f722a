"""The nft backend for the steering rules, used where the kernel has the ``queue``
statement (nft_queue); `firewall` falls back to iptables-nft's NFQUEUE otherwise.

Everything lives in one table of its own, ``inet sockscope_divert_<queue>_<pid>_<start>``
(the owner in the name, so a later run can tell a dead run's table), with one base
chain per hook; the whole table goes in with one ``nft -f`` transaction and out with
one ``delete table``. Whether the statement works is probed once per network
namespace with ``nft -c`` (the kernel checks the rule, nothing is applied).
"""

from __future__ import annotations

import os
import re
import subprocess

from sockscope.divert.rule import Rule
from sockscope.errors import PermissionNeeded, SockscopeError
from sockscope.platform.linux import run_sbin_tool, sbin_tool

TABLE_PREFIX = "sockscope_divert_"
_TABLE = re.compile(r"^table inet (" + TABLE_PREFIX + r"\d+_(\d+)_(\d+))$", re.MULTILINE)
_PROBE = """table inet sockscope_probe {
  chain c {
    type filter hook input priority 0; queue num 0 bypass
  }
}
"""
_probed: dict[int, bool] = {}  # netns inode -> the queue statement works


def _nft() -> str | None:
    return sbin_tool("nft")


def _run(args: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_sbin_tool("nft", args, package="nftables", script=script, timeout=30)


def queue_statement_available() -> bool:
    """True if this namespace's kernel accepts the nft ``queue`` statement (probed once)."""
    try:
        netns = os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        netns = 0
    if netns not in _probed:
        _probed[netns] = _nft() is not None and _run(["-c", "-f", "-"], _PROBE).returncode == 0
    return _probed[netns]


def table_name(queues: list[int], pid: int, start: int) -> str:
    return f"{TABLE_PREFIX}{queues[0]}_{pid}_{start}"


def queue_statement(queues: list[int], bypass: bool) -> str:
    flags = ["fanout"] if len(queues) > 1 else []
    flags += ["bypass"] if bypass else []
    target = str(queues[0]) if len(queues) == 1 else f"{queues[0]}-{queues[-1]}"
    return f"queue num {target}" + (f" {','.join(flags)}" if flags else "")


def render(rule: Rule, name: str, statement: str) -> str:
    """The ``nft -f`` script: the table, a base chain per hook, the matches + statement."""
    lines = [f"table inet {name} {{"]
    for hook in rule.hooks:
        lines.append(f"  chain {hook} {{")
        lines.append(f"    type filter hook {hook} priority 0; policy accept;")
        for family in rule.families:
            lines += [f"    {match} {statement}" for match in rule.nft_matches(family)]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(rule: Rule, queues: list[int], bypass: bool, pid: int, start: int) -> str:
    """Install the table in one transaction; returns its name."""
    name = table_name(queues, pid, start)
    _check(_run(["-f", "-"], render(rule, name, queue_statement(queues, bypass))))
    return name


def remove(name: str) -> None:
    _check(_run(["delete", "table", "inet", name]))


def leftover_tables(is_dead: object) -> list[str]:
    """Our tables whose owner ``is_dead(pid, start)``."""
    assert callable(is_dead)
    if _nft() is None:
        return []
    listing = _run(["list", "tables"])
    if listing.returncode != 0:
        return []
    return [m.group(1) for m in _TABLE.finditer(listing.stdout) if is_dead(int(m.group(2)), int(m.group(3)))]


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
        if "Operation not permitted" in detail:
            raise PermissionNeeded("divert needs CAP_NET_ADMIN to change the firewall (run as root)")
        raise SockscopeError(f"nft failed: {detail}")
