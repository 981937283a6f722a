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
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from load import Load, established_tcp

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=20000, help="established TCP sockets")
    parser.add_argument("--runs", type=int, default=15, help="counted runs of each side")
    parser.add_argument("--quick", action="store_true", help="2,000 sockets, 3 runs")
    parser.add_argument("--json", metavar="FILE", help="save the raw figures")
    args = parser.parse_args()
    if args.quick:
        args.sockets, args.runs = 2000, 3
    if os.geteuid() != 0:
        print("bench/inventory.py: run as root (owners of every process are part of the job)",
              file=sys.stderr)
        return 1

    print(f"machine: {machine()}")
    with Load(tcp_sockets=args.sockets, workers=8) as load:
        print(f"load: {established_tcp()} established TCP sockets held by {len(load.pids)} "
              f"processes, plus {load.extra} UDP sockets and {load.extra} unix socket pairs")
        ls_runs, ss_runs = interleaved(args.runs, 2, lambda: run_whole([SOCKSCOPE, "ls", "-t"]),
                                       lambda: run_whole(["ss", "-tanp"]))
        api_runs, ps_runs = interleaved(max(5, args.runs // 2), 1, lambda: run_api(API_SOCKSCOPE),
                                        lambda: run_api(API_PSUTIL))

    ls_wall = summary([r["wall"] for r in ls_runs])
    ss_wall = summary([r["wall"] for r in ss_runs])
    api_t = summary([r["seconds"] for r in api_runs])
    ps_t = summary([r["seconds"] for r in ps_runs])
    ls_ratio = ls_wall["median"] / ss_wall["median"]
    api_ratio = ps_t["median"] / api_t["median"]

    def row(name: str, s: dict[str, float], extra: str) -> str:
        return f"  {name:<40} {s['min']:7.3f} {s['median']:7.3f} {s['max']:7.3f}   {extra}"

    print("\nwhole process, wall seconds               min  median     max")
    for name, runs, wall in (("sockscope ls -t", ls_runs, ls_wall), ("ss -tanp", ss_runs, ss_wall)):
        cpu = statistics.median(r["cpu"] for r in runs)
        rss = statistics.median(r["maxrss_kib"] for r in runs) / 1024
        print(row(name, wall, f"cpu {cpu:.3f} s, peak RSS {rss:.1f} MiB"))
    print("\nin process, seconds of the call           min  median     max")
    for name, runs, t in (('sockscope.sockets(proto="tcp")', api_runs, api_t),
                          ('psutil.net_connections("tcp")', ps_runs, ps_t)):
        last = runs[-1]
        rss = statistics.median(r["maxrss_kib"] for r in runs) / 1024
        print(row(name, t, f"{last['sockets']} sockets, {last['with_pid']} with a pid, "
                           f"peak RSS {rss:.1f} MiB"))
    print("\nratios (medians)")
    print(f"  sockscope ls -t / ss -tanp          {ls_ratio:5.2f}x   target <= 1.50x  "
          f"{'PASS' if ls_ratio <= 1.5 else 'MISS'}")
    print(f"  psutil / sockscope.sockets()        {api_ratio:5.2f}x   target >= 2.00x  "
          f"{'PASS' if api_ratio >= 2 else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": machine(), "sockets": args.sockets, "runs": args.runs,
            "ls": ls_runs, "ss": ss_runs, "api": api_runs, "psutil": ps_runs,
            "ratio_ls_ss": ls_ratio, "ratio_psutil_api": api_ratio}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
