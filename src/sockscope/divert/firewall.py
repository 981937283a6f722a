"""The steering rules: installed by sockscope, owned by sockscope, removed by sockscope.

Where the kernel has the nft ``queue`` statement the rules are one nft table of
their own (`divert.nftables`). It is not built into every kernel (not into the one
this was written on), while iptables-nft's NFQUEUE target works wherever iptables
does, so there the rules go through ``iptables-restore``/``ip6tables-restore``:

* one chain per hook, ``SOCKSCOPE-DIVERT-<queue>-IN|OUT|FWD`` in table ``filter``,
  holding the ``--rule`` matches with ``-j NFQUEUE``, jumped to from the first
  position of INPUT/OUTPUT/FORWARD;
* every rule carries the comment ``sockscope divert pid=P start=T`` (T: the start
  time of process P), which is how a later run tells a crashed run's leftovers (P
  dead or reused) from a live divert;
* each family is one ``--noflush`` transaction (all or nothing); if the second
  family fails the first is rolled back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sockscope.divert import nftables
from sockscope.divert.engine import process_start_time
from sockscope.divert.rule import Rule
from sockscope.errors import PermissionNeeded, SockscopeError
from sockscope.platform.linux import run_sbin_tool

CHAIN_PREFIX = "SOCKSCOPE-DIVERT-"
BUILTIN = {"input": ("INPUT", "IN"), "output": ("OUTPUT", "OUT"), "forward": ("FORWARD", "FWD")}
TABLE = "filter"
_COMMENT = re.compile(r'--comment "?sockscope divert pid=(\d+) start=(\d+)"?')
_JUMP = re.compile(r"^-A (INPUT|OUTPUT|FORWARD) (.*)-j (" + re.escape(CHAIN_PREFIX) + r"\S+)\s*$")


def _run(family: int, what: str, script: str | None = None) -> str:
    name = f"{'ip6' if family == 6 else 'ip'}tables-{what}"
    args = ["--noflush"] if what == "restore" else ["-t", TABLE]
    proc = run_sbin_tool(name, args, package="iptables", script=script, timeout=30)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split()) or f"exit status {proc.returncode}"
        if "Permission denied" in detail or "must be root" in detail:
            raise PermissionNeeded("divert needs CAP_NET_ADMIN to change the firewall (run as root)")
        raise SockscopeError(f"{name} failed: {detail}")
    return proc.stdout


@dataclass
class Installed:
    """What one divert put into the firewall: per family the iptables script that
    removes it, or the nft table (nft backend)."""

    comment: str
    removal: dict[int, str] = field(default_factory=dict)
    nft_table: str | None = None

    @property
    def backend(self) -> str:
        return "nft" if self.nft_table is not None else "iptables"

    def remove(self) -> None:
        """Remove exactly what was installed; every family is tried, errors joined."""
        errors = []
        if self.nft_table is not None:
            table, self.nft_table = self.nft_table, None
            try:
                nftables.remove(table)
            except SockscopeError as exc:
                errors.append(str(exc))
        while self.removal:
            family, script = self.removal.popitem()
            try:
                _run(family, "restore", script)
            except SockscopeError as exc:
                errors.append(str(exc))
        if errors:
            raise SockscopeError("could not remove the divert rules: " + "; ".join(errors))


def queue_target(queues: list[int], bypass: bool) -> list[str]:
    """The NFQUEUE target arguments for one queue or a contiguous range (balance)."""
    if len(queues) == 1:
        args = ["--queue-num", str(queues[0])]
    else:
        args = ["--queue-balance", f"{queues[0]}:{queues[-1]}", "--queue-cpu-fanout"]
    return ["-j", "NFQUEUE", *args, *(["--queue-bypass"] if bypass else [])]


def install(
    rule: Rule, queues: list[int], bypass: bool, pid: int, start: int, backend: str | None = None
) -> Installed:
    """Install the steering rules for ``rule``; nothing is left behind if it fails.

    ``backend`` "nft" or "iptables"; None: nft where the kernel has its ``queue``
    statement (probed once per namespace), iptables-nft's NFQUEUE elsewhere.
    """
    comment = f"sockscope divert pid={pid} start={start}"
    if backend is None:
        backend = "nft" if nftables.queue_statement_available() else "iptables"
    if backend == "nft":
        return Installed(comment, nft_table=nftables.install(rule, queues, bypass, pid, start))
    installed = Installed(comment)
    target = queue_target(queues, bypass)
    for family in rule.families:
        lines = [f"*{TABLE}"]
        jumps = []
        for hook in rule.hooks:
            builtin, suffix = BUILTIN[hook]
            chain = f"{CHAIN_PREFIX}{queues[0]}-{suffix}"
            lines.append(f":{chain} - [0:0]")
            for args in rule.variants(family):
                lines.append(
                    " ".join(["-A", chain, *args, "-m", "comment", "--comment", f'"{comment}"', *target])
                )
            jumps.append((builtin, chain))
        for builtin, chain in jumps:
            lines.append(f'-I {builtin} 1 -m comment --comment "{comment}" -j {chain}')
        lines.append("COMMIT")
        try:
            _run(family, "restore", "\n".join(lines) + "\n")
        except SockscopeError:
            installed.remove()  # the family installed before this one
            raise
        installed.removal[family] = _removal_script(comment, jumps)
    return installed


def _removal_script(comment: str, jumps: list[tuple[str, str]]) -> str:
    lines = [f"*{TABLE}"]
    lines += [f'-D {builtin} -m comment --comment "{comment}" -j {chain}' for builtin, chain in jumps]
    for _builtin, chain in jumps:
        lines += [f"-F {chain}", f"-X {chain}"]
    return "\n".join([*lines, "COMMIT"]) + "\n"


def _dead(pid: int, start: int) -> bool:
    return process_start_time(pid) != start


def clean_leftovers(families: tuple[int, ...] = (4, 6)) -> list[str]:
    """Remove divert chains and nft tables whose owner process is gone; returns their
    names. Those of live owners (another divert running now) are left alone.
    """
    removed = []
    for table in nftables.leftover_tables(_dead):
        nftables.remove(table)
        removed.append(f"inet table {table}")
    for family in families:
        try:
            saved = _run(family, "save")
        except SockscopeError:
            continue  # no such table in this namespace yet, or no ip6tables
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
        stale = [c for c in chains if c in owners and _dead(*owners[c])]
        if not stale:
            continue
        lines = [f"*{TABLE}"]
        for chain in stale:
            lines += jumps.get(chain, [])
        for chain in stale:
            lines += [f"-F {chain}", f"-X {chain}"]
        _run(family, "restore", "\n".join([*lines, "COMMIT"]) + "\n")
        removed += [f"{'ip6' if family == 6 else 'ip'} {TABLE} {c}" for c in stale]
    return removed
