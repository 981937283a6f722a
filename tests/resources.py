"""What a test leaves behind, counted rather than assumed (issue 14).

`Snapshot.take()` records the test process's open descriptors (number and target),
its child processes (zombies included: a zombie is a child nobody waited for), its
live threads, the named network namespaces this run may have made, and the whole
nftables ruleset of the namespace the suite runs in. `Snapshot.leaks(before)` lists
what is here now that was not before, in words a failing test can print.

The comparison is on identities, not counts: a test that closes one descriptor and
leaks another is still caught. Things other runs make are not ours to judge: a
namespace named by tests/topology.py after another live process, or by
scripts/sandbox-netns.sh for another run, is not ours to judge; a namespace of any
other name is judged only in CI, where nothing else runs beside the suite.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
_TOPOLOGY_NAME = re.compile(r"ssc-(\d+)-")
_SANDBOX_NAME = re.compile(r"sockscope-sandbox-(\d+)")


def _descriptors() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            found[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:  # the descriptor listdir itself used, already closed
            continue
    return found


def _children() -> dict[int, str]:
    """Child pids of every thread of this process -> 'command (state)'."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        try:
            pids.update(int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split())
        except OSError:
            continue
    found = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        state = stat[stat.rindex(")") + 2]
        found[pid] = f"{command} ({'zombie' if state in 'ZX' else 'running'})"
    return found


def _threads() -> dict[int, str]:
    return {t.ident or 0: t.name for t in threading.enumerate() if t.is_alive()}


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _ours(name: str) -> bool:
    """Whether a namespace of that name could have been made by this test run."""
    for pattern in (_TOPOLOGY_NAME, _SANDBOX_NAME):
        m = pattern.match(name)
        if m is not None:
            pid = int(m.group(1))
            return pid == os.getpid() or not _pid_alive(pid) or _is_descendant(pid)
    # A name of another shape could be anybody's; in CI nothing else runs here, so
    # there it is ours (developers' own experiments beside a run are not judged).
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _is_descendant(pid: int) -> bool:
    me = os.getpid()
    for _ in range(64):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me:
            return True
        if ppid <= 1:
            return False
        pid = ppid
    return False


def _namespaces() -> set[str]:
    try:
        return {name for name in os.listdir(NETNS_DIR) if _ours(name)}
    except FileNotFoundError:
        return set()


def _ruleset() -> str | None:
    """The whole nftables ruleset of this namespace, or None where it cannot be read."""
    if os.geteuid() != 0 or shutil.which("nft") is None:
        return None
    proc = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, timeout=30)
    return proc.stdout if proc.returncode == 0 else None


@dataclass(frozen=True)
class Snapshot:
    descriptors: dict[int, str]
    children: dict[int, str]
    threads: dict[int, str]
    namespaces: set[str]
    ruleset: str | None

    @classmethod
    def take(cls, *, ruleset: bool = True) -> Snapshot:
        return cls(_descriptors(), _children(), _threads(), _namespaces(), _ruleset() if ruleset else None)

    def leaks(self, before: Snapshot) -> list[str]:
        found = []
        for fd, target in sorted(self.descriptors.items()):
            if before.descriptors.get(fd) != target:
                found.append(f"descriptor {fd} -> {target} left open")
        for pid, what in sorted(self.children.items()):
            if pid not in before.children:
                found.append(f"child process {pid} {what} left behind")
        for ident, name in sorted(self.threads.items()):
            if ident not in before.threads:
                found.append(f"thread {name!r} still running")
        for name in sorted(self.namespaces - before.namespaces):
            found.append(f"network namespace {name} left behind")
        if before.ruleset is not None and self.ruleset is not None and self.ruleset != before.ruleset:
            found.append("nftables ruleset changed:\n" + _diff(before.ruleset, self.ruleset))
        return found


def _diff(before: str, after: str) -> str:
    import difflib

    lines = difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm="")
    return "\n".join(lines)


def leaks_after(before: Snapshot, *, settle: float = 3.0) -> list[str]:
    """What the test left behind, allowing ``settle`` seconds for what is already on
    its way out (a child being reaped by a thread, a server thread finishing)."""
    deadline = time.monotonic() + settle
    while True:
        found = Snapshot.take(ruleset=before.ruleset is not None).leaks(before)
        if not found or time.monotonic() >= deadline:
            return found
        # No gc.collect() here: a descriptor that only the cycle collector would
        # close is a leak too (the user's program holds it until then).
        time.sleep(0.05)
