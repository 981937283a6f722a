"""The exporter's cost per scrape, against one `ss -tanp` run on the same load (#16).

One long-running `sockscope exporter` (not a fresh interpreter per scrape) watches
the benchmark's namespace, which holds the load of bench/load.py (established
loopback TCP sockets in worker processes, plus some UDP and Unix sockets). After
warm-up scrapes it is scraped N times in a row: wall time of each HTTP scrape,
the exporter's CPU time for it (from /proc/PID/stat, children included) and its
resident memory after it. `ss -tanp` runs as many times on the same load, wall
and CPU (wait4). Target: a scrape costs no more than one `ss -tanp` run, and the
exporter's RSS stays flat over the scrapes.

    .venv/bin/python bench/exporter.py              # 20,000 sockets in 8 processes, 60 scrapes
    .venv/bin/python bench/exporter.py --large      # 200,000 sockets in 16 processes, 10 scrapes
    .venv/bin/python bench/exporter.py --quick      # 2,000 sockets, 5 scrapes (a smoke run)

Exit status: 0 compared; 1 compared but a scrape did not see the load (CHECK
FAILED), or not root; 2 a side could not run; 130 interrupted. The load and the
exporter are stopped in every case.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sandbox
from inventory import machine, summary
from load import Load

SOCKSCOPE = [sys.executable, "-m", "sockscope"]
TICK = os.sysconf("SC_CLK_TCK")
ESTABLISHED = re.compile(r'^sockscope_sockets\{family="inet6?",netns="[^"]*",proto="tcp",'
                         r'state="ESTABLISHED"\} (\S+)$', re.M)


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of a process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_exporter(netns: str | None) -> tuple[subprocess.Popen[bytes], int]:
    args = ["-N", netns] if netns else []
    proc = subprocess.Popen([*SOCKSCOPE, "exporter", "--listen", "127.0.0.1:0", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 30)
    line = proc.stderr.readline().decode() if ready else ""
    found = re.search(r"127\.0\.0\.1:(\d+)/metrics", line)
    if not found:
        proc.kill()
        _, err = proc.communicate()
        raise SystemExit(f"bench/exporter.py: FAILED, nothing compared: the exporter did not start: "
                         f"{(line + err.decode(errors='replace')).strip()[-500:]}")
    return proc, int(found.group(1))


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise RuntimeError(f"scrape answered {resp.status}")
        return body
    finally:
        conn.close()


def run_ss() -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(["ss", "-tanp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench/exporter.py: FAILED, nothing compared: ss -tanp exited {proc.returncode}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime}


def bench(args: argparse.Namespace) -> int:
    host = machine()
    load_before = os.getloadavg()
    print(f"machine: {host}; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    netns = os.environ.get("SOCKSCOPE_SANDBOX_NETNS")
    with Load(n_sockets=args.sockets, workers=args.workers) as load:
        counts = load.counts
        print(f"load: {counts['tcp']} established loopback TCP sockets, {counts['udp']} UDP and "
              f"{counts['unix']} unix sockets held by {len(load.pids)} processes "
              f"(built in {load.build_seconds:.1f} s)")
        exporter, port = start_exporter(netns)
        try:
            for _ in range(args.warmup):
                scrape(port)
            scrapes: list[dict[str, Any]] = []
            print(f"{args.warmup} warm-up + {args.scrapes} counted scrapes of one exporter "
                  f"(pid {exporter.pid}), then {args.warmup} + {args.ss_runs} runs of ss -tanp ...",
                  flush=True)
            for _ in range(args.scrapes):
                cpu0 = cpu_seconds(exporter.pid)
                t0 = time.perf_counter()
                body = scrape(port)
                wall = time.perf_counter() - t0
                cpu = cpu_seconds(exporter.pid) - cpu0
                seen = sum(float(v) for v in ESTABLISHED.findall(body))
                duration = re.search(r"^sockscope_exporter_scrape_duration_seconds (\S+)$", body, re.M)
                scrapes.append({"wall": wall, "cpu": cpu, "rss_mib": rss_mib(exporter.pid),
                                "established": seen, "bytes": len(body),
                                "collection": float(duration.group(1)) if duration else None})
        finally:
            exporter.send_signal(signal.SIGTERM)
            exporter.communicate(timeout=30)
        for _ in range(args.warmup):
            run_ss()
        ss_runs = [run_ss() for _ in range(args.ss_runs)]
    load_after = os.getloadavg()

    wall, cpu = summary([s["wall"] for s in scrapes]), summary([s["cpu"] for s in scrapes])
    coll = summary([s["collection"] for s in scrapes if s["collection"] is not None])
    ss_wall, ss_cpu = summary([r["wall"] for r in ss_runs]), summary([r["cpu"] for r in ss_runs])
    rss = [s["rss_mib"] for s in scrapes]

    def row(name: str, v: dict[str, float]) -> str:
        return f"  {name:<40} {v['min']:7.3f} {v['median']:7.3f} {v['max']:7.3f}"

    print(f"\n  {'':<40} {'min':>7} {'median':>7} {'max':>7}")
    print(row(f"exporter scrape, wall s ({args.scrapes})", wall))
    print(row("exporter scrape, cpu s (user+sys)", cpu))
    print(row("exporter collection (its own gauge) s", coll))
    print(row(f"ss -tanp, wall s ({args.ss_runs})", ss_wall))
    print(row("ss -tanp, cpu s (user+sys)", ss_cpu))
    print(f"  exporter RSS: after scrape 1 {rss[0]:.1f} MiB, after scrape {len(rss)} {rss[-1]:.1f} MiB, "
          f"max {max(rss):.1f} MiB, min {min(rss):.1f} MiB")
    print(f"  exposition: {statistics.median([s['bytes'] for s in scrapes]):.0f} bytes a scrape")
    sane = all(s["established"] >= counts["tcp"] for s in scrapes)
    if not sane:
        print(f"  CHECK FAILED: a scrape counted fewer than the load's {counts['tcp']} established sockets: "
              f"{sorted({s['established'] for s in scrapes})}")
    wall_ratio = wall["median"] / ss_wall["median"]
    cpu_ratio = cpu["median"] / ss_cpu["median"]
    growth = rss[-1] - rss[0]
    print("\nratios of medians")
    print(f"  scrape / ss -tanp, wall   {wall_ratio:5.2f}x   target <= 1.00x  "
          f"{'PASS' if wall_ratio <= 1 else 'MISS'}")
    print(f"  scrape / ss -tanp, cpu    {cpu_ratio:5.2f}x   target <= 1.00x  "
          f"{'PASS' if cpu_ratio <= 1 else 'MISS'}")
    print(f"  RSS growth over {len(rss)} scrapes: {growth:+.1f} MiB")
    if args.sockets >= 200000:
        print(f"  {args.sockets} sockets: median scrape {wall['median']:.2f} s, max {wall['max']:.2f} s; "
              f"Prometheus's default scrape timeout is 10 s  {'PASS' if wall['max'] < 10 else 'MISS'}")
    print(f"\nload average at the end {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
          "(the benchmark's own work included)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": host, "sockets": args.sockets, "workers": args.workers, "load": counts,
            "scrapes": scrapes, "ss": ss_runs, "ratio_wall": wall_ratio, "ratio_cpu": cpu_ratio,
            "loadavg_before": load_before, "loadavg_after": load_after}, indent=1) + "\n")
        print(f"raw figures: {args.json}")
    return 0 if sane else 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=20000, help="established TCP sockets (even)")
    parser.add_argument("--workers", type=int, default=8, help="processes holding them (default 8)")
    parser.add_argument("--scrapes", type=int, default=60, help="counted scrapes (default 60)")
    parser.add_argument("--ss-runs", type=int, default=15, help="counted ss -tanp runs (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="uncounted scrapes and ss runs first")
    parser.add_argument("--large", action="store_true", help="200,000 sockets in 16 processes, 10 scrapes")
    parser.add_argument("--quick", action="store_true", help="2,000 sockets, 5 scrapes: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="save the raw figures")
    args = parser.parse_args()
    if args.large:
        args.sockets, args.workers, args.scrapes, args.ss_runs = 200000, 16, 10, 3
    if args.quick:
        args.sockets, args.scrapes, args.ss_runs, args.warmup = 2000, 5, 3, 1
    if args.sockets < 2 or args.sockets % 2 or args.scrapes < 1 or args.ss_runs < 1 or args.warmup < 0:
        parser.error("--sockets must be even and >= 2, --scrapes and --ss-runs >= 1, --warmup >= 0")
    if os.geteuid() != 0:
        print("bench/exporter.py: run as root (the exporter reads every process's sockets)", file=sys.stderr)
        return 1
    sandbox.enter()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        return bench(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
