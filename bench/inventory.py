"""Socket inventory benchmark: sockscope against ss and psutil, side by side.

Builds its own load (bench/load.py: 20,000 established loopback TCP sockets
held by 8 processes, plus UDP and Unix sockets), then measures in one run,
interleaved so that drift in the machine's speed hits both sides alike:

1. whole process: ``sockscope ls -t`` (owners included) against ``ss -tanp``;
2. in process: ``sockscope.sockets(proto="tcp")`` against
   ``psutil.net_connections("tcp")``, both with owner pids, each call in a
   fresh interpreter so imports and peak RSS are per run.

Prints medians and the ratios against the targets (ls <= 1.5x ss, API >= 2x
faster than psutil). Run as root: ``.venv/bin/python bench/inventory.py``.
Peak RSS of whole commands needs ``/usr/bin/time`` (Debian's ``time`` package,
installed by ``scripts/setup.sh --test``); without it those figures are n/a.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from load import Load, time_wait_tcp

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))
GNU_TIME = "/usr/bin/time"

# Both snippets time only the call and the pid collection; the import (for
# sockscope, resolving its lazy ``sockets`` attribute too, as ``import psutil``
# loads everything up front) is timed apart. sockscope forks a child for its
# /proc scan, so the call's CPU counts reaped children and the child's peak RSS
# is reported beside the interpreter's.
_API_TAIL = """
elapsed = time.perf_counter() - t
r1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in ((r0, r1), (c0, c1)))
print(json.dumps({"seconds": elapsed, "cpu": cpu, "import_seconds": imported, "sockets": n,
                  "with_pid": owned, "pids": len(pids), "maxrss_kib": r1.ru_maxrss,
                  "child_maxrss_kib": c1.ru_maxrss}))
"""

API_SOCKSCOPE = """
import json, resource, time
t = time.perf_counter()
import sockscope
sockets = sockscope.sockets
imported = time.perf_counter() - t
r0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
t = time.perf_counter()
socks = sockets(proto="tcp")
pids = {o.pid for s in socks for o in s.owners}
n, owned = len(socks), sum(1 for s in socks if s.owners)
""" + _API_TAIL

API_PSUTIL = """
import json, resource, time
t = time.perf_counter()
import psutil
imported = time.perf_counter() - t
r0, c0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
t = time.perf_counter()
conns = psutil.net_connections("tcp")
pids = {c.pid for c in conns if c.pid}
n, owned = len(conns), sum(1 for c in conns if c.pid)
""" + _API_TAIL


# One long-running process, as the exporter and `top` are: 21 calls of each,
# interleaved; the first call apart, the median of the next 20.
API_REPEATED = """
import json, statistics, time
import psutil, sockscope
calls = {"sockscope": lambda: sockscope.sockets(proto="tcp"),
         "psutil": lambda: psutil.net_connections("tcp")}
times = {name: [] for name in calls}
for _ in range(21):
    for name, call in calls.items():
        t = time.perf_counter()
        call()
        times[name].append(time.perf_counter() - t)
print(json.dumps({name: {"first": t[0], "median": statistics.median(t[1:]), "max": max(t[1:])}
                  for name, t in times.items()}))
"""


class SideFailed(RuntimeError):
    """One side of the comparison could not run: nothing about it can be timed."""


class Runner:
    """Runs commands to completion, one at a time, and measures each.

    Every command starts under /usr/bin/time when it is there: a process spawned
    straight from this interpreter inherits our RSS high-water mark across exec
    (the kernel carries it in ru_maxrss), which would hide a smaller peak such
    as ss's; /usr/bin/time's own is about 2 MiB. Wall time is taken here, CPU
    from os.wait4 (the command, every descendant it reaped, and /usr/bin/time's
    own millisecond or so, on both sides alike).
    """

    def __init__(self) -> None:
        self.have_time = os.access(GNU_TIME, os.X_OK)

    def run(self, argv: list[str], name: str, stdout: int | None = subprocess.DEVNULL) -> dict[str, Any]:
        # The command's stderr and /usr/bin/time's report go to unlinked files, not pipes
        # (we wait on the pid, so a full pipe would stall it) and not named files (nothing
        # is left behind even if the benchmark is killed); time opens its file by /dev/fd.
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as rss:
            full = argv
            if self.have_time:
                full = [GNU_TIME, "-f", "%M", "-o", f"/dev/fd/{rss.fileno()}", *argv]
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(full, stdout=stdout, stderr=err, pass_fds=(rss.fileno(),))
            except OSError as exc:
                raise SideFailed(f"{name}: cannot start {argv[0]}: {exc}") from None
            out = proc.stdout.read() if proc.stdout is not None else b""
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            if proc.stdout is not None:
                proc.stdout.close()
            err.seek(0)
            errors = err.read().decode(errors="replace").strip()
            rss.seek(0)
            report = rss.read().decode(errors="replace").split()
        if proc.returncode in (-signal.SIGINT, 128 + signal.SIGINT):
            # Ctrl-C reached the command too (and /usr/bin/time passes its death on as 130).
            raise KeyboardInterrupt("SIGINT")
        if proc.returncode != 0:
            tail = "\n".join(errors.splitlines()[-8:])
            raise SideFailed(f"{name}: `{' '.join(argv)}` exited {proc.returncode}:\n{tail}")
        maxrss = int(report[-1]) if self.have_time else None
        return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": maxrss,
                "stdout": out}

    def whole(self, argv: list[str], name: str) -> dict[str, Any]:
        result = self.run(argv, name)
        del result["stdout"]
        return result

    def api(self, code: str, name: str) -> dict[str, Any]:
        done = self.run([sys.executable, "-c", code], name, stdout=subprocess.PIPE)
        result: dict[str, Any] = json.loads(done["stdout"])
        result["process_wall"] = done["wall"]
        return result


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def interleaved(runs: int, warmup: int, a: Callable[[], Any], b: Callable[[], Any]) -> tuple[list[Any], ...]:
    """A B A B ...: a drift in the machine's speed lands on both sides alike."""
    for _ in range(warmup):
        a()
        b()
    ra, rb = [], []
    for _ in range(runs):
        ra.append(a())
        rb.append(b())
    return ra, rb


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {model}, kernel {platform.release()}, "
            f"Python {platform.python_version()}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the `with Load(...)` block tears the load down.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=20000, help="established TCP sockets (even)")
    parser.add_argument("--runs", type=int, help="counted runs of each side (default 15; --scale: 3)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted runs of each side first (default 2)")
    parser.add_argument("--quick", action="store_true", help="2,000 sockets, 1 + 3 runs: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="save the raw figures")
    parser.add_argument("--scale", action="store_true",
                        help="a busy proxy's load (default 200,000 sockets): ls --jsonl, the table "
                             "and --no-align against ss -tanp, wall and peak RSS (bench/inventory_scale.py)")
    parser.add_argument("--no-ss", action="store_true", help="with --scale: leave ss out")
    args = parser.parse_args()
    if args.scale and "--sockets" not in sys.argv:
        args.sockets = 200_000
    if args.quick:
        args.sockets, args.runs, args.warmup = 2000, 3, 1
    if args.runs is None and not args.scale:
        args.runs = 15
    if args.sockets < 2 or args.sockets % 2 or (args.runs or 1) < 1 or args.warmup < 0:
        parser.error("--sockets must be even and >= 2, --runs >= 1, --warmup >= 0")
    if os.geteuid() != 0:
        print("bench/inventory.py: run as root (owners of every process are part of the job)",
              file=sys.stderr)
        return 1
    if not os.access(SOCKSCOPE, os.X_OK):
        print(f"bench/inventory.py: sockscope side: {SOCKSCOPE} not found (pip install -e . in this venv)",
              file=sys.stderr)
        return 2
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)

    try:
        if args.scale:
            from inventory_scale import run_scale

            args.sockscope = SOCKSCOPE
            return run_scale(args, Runner(), machine())
        return bench(args, Runner())
    except SideFailed as exc:
        print(f"bench/inventory.py: FAILED, nothing compared: {exc}", file=sys.stderr)
        return 2


def bench(args: argparse.Namespace, runner: Runner) -> int:
    host = machine()
    # Other work on a shared 2-core VM skews both sides; the load average makes that visible.
    load_before = os.getloadavg()[0]
    print(f"machine: {host}; load average {load_before:.2f}")
    if not runner.have_time:
        print(f"note: {GNU_TIME} missing, peak RSS of whole commands is n/a", file=sys.stderr)
    ls_argv, ss_argv = [SOCKSCOPE, "ls", "-t"], ["ss", "-tanp"]
    with Load(n_sockets=args.sockets, workers=8) as load:
        counts, seen = load.counts, load.seen
        print(f"load: {counts['tcp']} established loopback TCP sockets, {counts['udp']} UDP sockets and "
              f"{counts['unix']} unix sockets held by {len(load.pids)} processes "
              f"(built in {load.build_seconds:.1f} s); `ss -tuxanp` sees {seen['tcp']} / {seen['udp']} / "
              f"{seen['unix']} of them with their owner")
        # One untimed run of each side first: it fails loudly here if a side is broken, and
        # the row counts show both list the same set.
        rows = {name: max(0, runner.run(argv, name, stdout=subprocess.PIPE)["stdout"].count(b"\n") - 1)
                for name, argv in (("sockscope", ls_argv), ("ss", ss_argv))}
        print(f"check: sockscope ls -t prints {rows['sockscope']} rows, ss -tanp {rows['ss']}")
        print(f"running {args.warmup} warm-up + {args.runs} counted runs of each side, interleaved ...",
              flush=True)
        ls_runs, ss_runs = interleaved(args.runs, args.warmup, lambda: runner.whole(ls_argv, "sockscope"),
                                       lambda: runner.whole(ss_argv, "ss"))
        api_runs, ps_runs = interleaved(args.runs, args.warmup,
                                        lambda: runner.api(API_SOCKSCOPE, "sockscope"),
                                        lambda: runner.api(API_PSUTIL, "psutil"))
        repeated = runner.api(API_REPEATED, "repeated calls")
    # The load is gone: say whether its teardown left TIME_WAIT sockets behind.
    time_wait = time_wait_tcp()
    load_after = os.getloadavg()[0]

    def s(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
        return summary([r[key] for r in runs])

    ls_wall, ss_wall = s(ls_runs, "wall"), s(ss_runs, "wall")
    ls_cpu, ss_cpu = s(ls_runs, "cpu"), s(ss_runs, "cpu")
    api_t, ps_t = s(api_runs, "seconds"), s(ps_runs, "seconds")
    api_cpu, ps_cpu = s(api_runs, "cpu"), s(ps_runs, "cpu")
    ls_ratio = ls_wall["median"] / ss_wall["median"]
    api_ratio = ps_t["median"] / api_t["median"]

    def row(name: str, v: dict[str, float], extra: str = "") -> str:
        return f"  {name:<36} {v['min']:7.3f} {v['median']:7.3f} {v['max']:7.3f}   {extra}".rstrip()

    def header(title: str) -> str:
        return f"\n{title}\n  {'':<36} {'min':>7} {'median':>7} {'max':>7}"

    def mib(runs: list[dict[str, Any]], key: str = "maxrss_kib") -> str:
        values = [r[key] / 1024 for r in runs if r[key] is not None]
        if not values:
            return "n/a"
        return f"{statistics.median(values):.1f} MiB (max {max(values):.1f})"

    print(header(f"whole process, output to /dev/null, {args.runs} runs"))
    print(row("sockscope ls -t   wall s", ls_wall, f"peak RSS {mib(ls_runs)}"))
    print(row("ss -tanp          wall s", ss_wall, f"peak RSS {mib(ss_runs)}"))
    print(row("sockscope ls -t   cpu s (user+sys)", ls_cpu, "incl. its forked scan child"))
    print(row("ss -tanp          cpu s (user+sys)", ss_cpu))
    print(header(f"in process, each in a fresh interpreter, {args.runs} runs"))
    print(row('sockscope.sockets(proto="tcp") s', api_t,
              f"peak RSS {mib(api_runs)}, scan child {mib(api_runs, 'child_maxrss_kib')}"))
    print(row('psutil.net_connections("tcp") s', ps_t, f"peak RSS {mib(ps_runs)}"))
    print(row("sockscope call cpu s (user+sys)", api_cpu, "incl. its forked scan child"))
    print(row("psutil call cpu s (user+sys)", ps_cpu))
    print(row("import sockscope s", s(api_runs, "import_seconds"), "not in the call's time"))
    print(row("import psutil s", s(ps_runs, "import_seconds"), "not in the call's time"))
    print("\nin one long-running process, 21 calls of each, interleaved")
    print(f"  {'':<36} {'first':>7} {'median':>7} {'max':>7}   (median and max of calls 2-21)")
    for name, label in (("sockscope", 'sockscope.sockets(proto="tcp") s'),
                        ("psutil", 'psutil.net_connections("tcp") s')):
        r = repeated[name]
        print(f"  {label:<36} {r['first']:7.3f} {r['median']:7.3f} {r['max']:7.3f}")
    repeated_ratio = repeated["psutil"]["median"] / repeated["sockscope"]["median"]
    sane = True
    for name, runs in (("sockscope", api_runs), ("psutil", ps_runs)):
        found = sorted({(r["sockets"], r["with_pid"], r["pids"]) for r in runs})
        sane = sane and all(with_pid >= counts["tcp"] for _, with_pid, _ in found)
        print(f"  {name:<10} found (sockets, with an owner pid, distinct pids): "
              + ", ".join(str(f) for f in found))
    if not sane:
        print(f"  CHECK FAILED: a side found fewer than the load's {counts['tcp']} sockets with an owner pid")

    scale = "" if args.sockets == 20000 else f"  (targets are for 20,000 sockets; this run: {args.sockets})"
    print(f"\nratios of medians{scale}")
    print(f"  sockscope ls -t / ss -tanp, wall     {ls_ratio:5.2f}x   target <= 1.50x  "
          f"{'PASS' if ls_ratio <= 1.5 else 'MISS'}")
    print(f"  sockscope ls -t / ss -tanp, cpu      {ls_cpu['median'] / ss_cpu['median']:5.2f}x")
    print(f"  psutil / sockscope.sockets(), call   {api_ratio:5.2f}x   target >= 2.00x  "
          f"{'PASS' if api_ratio >= 2 else 'MISS'}")
    print(f"  psutil / sockscope.sockets(), cpu    {ps_cpu['median'] / api_cpu['median']:5.2f}x")
    print(f"  the same, repeated in one process    {repeated_ratio:5.2f}x   target >= 2.00x  "
          f"{'PASS' if repeated_ratio >= 2 else 'MISS'}")
    print(f"\nteardown: {time_wait} TCP sockets in TIME_WAIT left on the host; "
          f"1-min load average at the end {load_after:.2f} (the benchmark's own work included)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": host, "sockets": args.sockets, "runs": args.runs, "warmup": args.warmup,
            "load": counts, "load_seen_by_ss": seen, "rows": rows,
            "ls": ls_runs, "ss": ss_runs, "api": api_runs, "psutil": ps_runs,
            "repeated": repeated, "ratio_repeated": repeated_ratio,
            "ratio_ls_ss": ls_ratio, "ratio_psutil_api": api_ratio, "owners_check": sane,
            "time_wait_after": time_wait, "loadavg_before": load_before, "loadavg_after": load_after},
            indent=1) + "\n")
        print(f"raw figures: {args.json}")
    return 0 if sane else 1


if __name__ == "__main__":
    import sandbox  # bench/: no packet of a benchmark leaves the host

    sandbox.enter()
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        print(f"\nbench/inventory.py: interrupted ({str(exc) or 'SIGINT'}); load torn down", file=sys.stderr)
        raise SystemExit(130) from None
