"""Socket inventory benchmark: sockscope against ss and psutil, side by side.

Builds its own load (bench/load.py: 20,000 established loopback TCP sockets
held by 8 processes, plus UDP and Unix sockets), then measures in one run,
interleaved so that drift in the machine's speed hits both sides alike:

1. whole process: ``sockscope ls -t`` (owners included) against ``ss -tanp``;
2. in process: ``sockscope.sockets(proto="tcp")`` against
   ``psutil.net_connections("tcp")``, both with owner pids, each call in a
   fresh interpreter so imports and peak RSS are per run.

Prints medians and the ratios against the targets (ls <= 1.5x ss, API >= 2x
faster than psutil). Run as root: ``.venv/bin/python bench/inventory.py``
(needs Debian's ``time`` package for peak RSS; ``scripts/setup.sh --test`` installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from load import Load, established_tcp, time_wait_tcp

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))

API_SOCKSCOPE = """
import json, resource, time
import sockscope
sockets = sockscope.sockets  # resolves the lazy import, as `import psutil` does up front
t = time.perf_counter()
socks = sockets(proto="tcp")
pids = {o.pid for s in socks for o in s.owners}
elapsed = time.perf_counter() - t
owned = sum(1 for s in socks if s.owners)
print(json.dumps({"seconds": elapsed, "sockets": len(socks), "with_pid": owned, "pids": len(pids),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

API_PSUTIL = """
import json, resource, time
import psutil
t = time.perf_counter()
conns = psutil.net_connections("tcp")
pids = {c.pid for c in conns if c.pid}
elapsed = time.perf_counter() - t
owned = sum(1 for c in conns if c.pid)
print(json.dumps({"seconds": elapsed, "sockets": len(conns), "with_pid": owned, "pids": len(pids),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_whole(argv: list[str]) -> dict[str, float]:
    """Wall, CPU (the process and every descendant it reaped) and peak RSS of one run.

    CPU also counts /usr/bin/time itself, about a millisecond, on both sides alike.

    The command runs under /usr/bin/time, which reports the peak RSS of the command
    alone: a child forked straight from this Python process would carry our own
    RSS in its high-water mark across exec. Wall and CPU are measured here.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], stdout=devnull,
                              stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "maxrss_kib": int(proc.stderr.strip().splitlines()[-1])}


def rows(argv: list[str]) -> int:
    """Table rows (header excluded) a lister prints: a check that both sides listed the same set."""
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return max(0, len(out.splitlines()) - 1)


def run_api(code: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def interleaved(runs: int, warmup: int, a: Any, b: Any) -> tuple[list[Any], list[Any]]:
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
    parser.add_argument("--runs", type=int, default=15, help="counted runs of each side (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted runs of each side first (default 2)")
    parser.add_argument("--quick", action="store_true", help="2,000 sockets, 3 runs: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="save the raw figures")
    args = parser.parse_args()
    if args.quick:
        args.sockets, args.runs, args.warmup = 2000, 3, 1
    if args.sockets < 2 or args.sockets % 2 or args.runs < 1 or args.warmup < 0:
        parser.error("--sockets must be even and >= 2, --runs >= 1, --warmup >= 0")
    if os.geteuid() != 0:
        print("bench/inventory.py: run as root (owners of every process are part of the job)",
              file=sys.stderr)
        return 1
    for tool in (SOCKSCOPE, "/usr/bin/time"):
        if not os.access(tool, os.X_OK):
            print(f"bench/inventory.py: {tool} not found", file=sys.stderr)
            return 1
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)

    host = machine()
    # Other work on a shared 2-core VM skews both sides; the load average makes that visible.
    load_before = os.getloadavg()[0]
    print(f"machine: {host}; load average {load_before:.2f}")
    ls_argv, ss_argv = [SOCKSCOPE, "ls", "-t"], ["ss", "-tanp"]
    t0 = time.perf_counter()
    with Load(n_sockets=args.sockets, workers=8) as load:
        counts = load.counts
        witness = established_tcp()
        print(f"load: {counts['tcp']} established loopback TCP sockets, {counts['udp']} UDP sockets and "
              f"{counts['unix']} unix sockets held by {len(load.pids)} processes "
              f"(built in {time.perf_counter() - t0:.1f} s); ss counts {witness} established TCP on the host")
        rows_ls, rows_ss = rows(ls_argv), rows(ss_argv)
        print(f"check: sockscope ls -t prints {rows_ls} rows, ss -tanp {rows_ss}")
        print(f"running {args.warmup} warm-up + {args.runs} counted runs of each side, interleaved ...",
              flush=True)
        ls_runs, ss_runs = interleaved(args.runs, args.warmup, lambda: run_whole(ls_argv),
                                       lambda: run_whole(ss_argv))
        api_runs, ps_runs = interleaved(args.runs, args.warmup, lambda: run_api(API_SOCKSCOPE),
                                        lambda: run_api(API_PSUTIL))
    # The load is gone: say whether its teardown left TIME_WAIT sockets behind.
    time_wait = time_wait_tcp()
    load_after = os.getloadavg()[0]

    ls_wall = summary([r["wall"] for r in ls_runs])
    ss_wall = summary([r["wall"] for r in ss_runs])
    ls_cpu = summary([r["cpu"] for r in ls_runs])
    ss_cpu = summary([r["cpu"] for r in ss_runs])
    api_t = summary([r["seconds"] for r in api_runs])
    ps_t = summary([r["seconds"] for r in ps_runs])
    ls_ratio = ls_wall["median"] / ss_wall["median"]
    api_ratio = ps_t["median"] / api_t["median"]

    def row(name: str, s: dict[str, float], extra: str = "") -> str:
        return f"  {name:<34} {s['min']:7.3f} {s['median']:7.3f} {s['max']:7.3f}   {extra}".rstrip()

    def header(title: str) -> str:
        return f"\n{title}\n  {'':<34} {'min':>7} {'median':>7} {'max':>7}"

    def mib(runs: list[dict[str, Any]]) -> str:
        values = [r["maxrss_kib"] / 1024 for r in runs]
        return f"peak RSS median {statistics.median(values):.1f} MiB (max {max(values):.1f})"

    print(header(f"whole process, output to /dev/null, {args.runs} runs"))
    print(row("sockscope ls -t   wall s", ls_wall, mib(ls_runs)))
    print(row("ss -tanp          wall s", ss_wall, mib(ss_runs)))
    print(row("sockscope ls -t   cpu s (user+sys)", ls_cpu, "incl. its forked scan child"))
    print(row("ss -tanp          cpu s (user+sys)", ss_cpu))
    print(header(f"in process, seconds of the call, each in a fresh interpreter, {args.runs} runs"))
    for name, runs, t in (('sockscope.sockets(proto="tcp")', api_runs, api_t),
                          ('psutil.net_connections("tcp")', ps_runs, ps_t)):
        print(row(name, t, mib(runs)))
    for name, runs in (("sockscope", api_runs), ("psutil", ps_runs)):
        found = sorted({(r["sockets"], r["with_pid"], r["pids"]) for r in runs})
        print(f"  {name:<10} found (sockets, with an owner pid, distinct pids): "
              + ", ".join(str(f) for f in found))

    scale = "" if args.sockets == 20000 else f"  (targets are for 20,000 sockets; this run: {args.sockets})"
    print(f"\nratios of medians{scale}")
    print(f"  sockscope ls -t / ss -tanp, wall     {ls_ratio:5.2f}x   target <= 1.50x  "
          f"{'PASS' if ls_ratio <= 1.5 else 'MISS'}")
    print(f"  sockscope ls -t / ss -tanp, cpu      {ls_cpu['median'] / ss_cpu['median']:5.2f}x")
    print(f"  psutil / sockscope.sockets(), call   {api_ratio:5.2f}x   target >= 2.00x  "
          f"{'PASS' if api_ratio >= 2 else 'MISS'}")
    print(f"\nteardown: {time_wait} TCP sockets in TIME_WAIT left on the host; "
          f"1-min load average at the end {load_after:.2f} (the benchmark's own work included)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": host, "sockets": args.sockets, "runs": args.runs, "warmup": args.warmup,
            "load": counts, "established_witness": witness, "rows": {"ls": rows_ls, "ss": rows_ss},
            "ls": ls_runs, "ss": ss_runs, "api": api_runs, "psutil": ps_runs,
            "ratio_ls_ss": ls_ratio, "ratio_psutil_api": api_ratio, "time_wait_after": time_wait,
            "loadavg_before": load_before, "loadavg_after": load_after},
            indent=1) + "\n")
        print(f"raw figures: {args.json}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        print(f"\nbench/inventory.py: interrupted ({str(exc) or 'SIGINT'}); load torn down", file=sys.stderr)
        raise SystemExit(130) from None
