"""The inventory at the scale of a busy proxy: ``bench/inventory.py --scale``.

Builds 200,000 (``--sockets N``) established loopback TCP sockets in the
benchmark's own namespace, held by processes that raise their descriptor limit
to the hard limit (12,500 sockets each, every process on its own listener
address, so ephemeral ports never run short), then times whole commands side by
side, interleaved, output to /dev/null, wall time and peak RSS (/usr/bin/time):

    ss -tanp | sockscope ls -t --jsonl | sockscope ls -t | sockscope ls -t --no-align

plus one call of each in a fresh interpreter: the owner scan alone (one
process), the dump alone (``owners=False``), ``sockets()``, a pass over
``iter_sockets()``, and ``psutil.net_connections()``. Peak RSS is also measured
with no load, so the memory each socket adds is stated. ``--no-ss`` leaves ss
out (at a million sockets its owner lookup takes many minutes).

fs.file-max is raised for the run where the load needs it, and put back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from load import Load, time_wait_tcp

PER_WORKER = 12_500  # established sockets a holder keeps (its hard limit here is 20,000)
RUNS = 3

# One call in a fresh interpreter: the call's time and the interpreter's peak RSS.
API_CALL = """
import json, resource, time
import {module}
t = time.perf_counter()
n = {call}
elapsed = time.perf_counter() - t
print(json.dumps({{"seconds": elapsed, "sockets": n,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
API_CALLS = {
    # The two halves alone, to compare with the whole: the owner scan on one core, and
    # the dump and parse without owners.
    "owner scan alone (one process)": (
        "sockscope.inventory.owners as o", "o.scan_owners().descriptors()"),
    "sockets(proto=\"tcp\", owners=False)": (
        "sockscope", "len(sockscope.sockets(proto='tcp', owners=False))"),
    "sockscope.sockets(proto=\"tcp\")": ("sockscope", "len(sockscope.sockets(proto='tcp'))"),
    "sockscope.iter_sockets(proto=\"tcp\")": (
        "sockscope", "sum(1 for s in sockscope.iter_sockets(proto='tcp') if s.owners)"),
    "psutil.net_connections(\"tcp\")": ("psutil", "len(psutil.net_connections('tcp'))"),
}


def commands(sockscope: str, with_ss: bool) -> dict[str, list[str]]:
    found = {
        "sockscope ls -t --jsonl": [sockscope, "ls", "-t", "--jsonl"],
        "sockscope ls -t": [sockscope, "ls", "-t"],
        "sockscope ls -t --no-align": [sockscope, "ls", "-t", "--no-align"],
    }
    if with_ss:
        found = {"ss -tanp": ["ss", "-tanp"], **found}
    return found


class FileMax:
    """fs.file-max raised to what the load needs for the duration, then put back."""

    PATH = Path("/proc/sys/fs/file-max")

    def __init__(self, need: int) -> None:
        self.need = need
        self.old: int | None = None

    def __enter__(self) -> FileMax:
        current = int(self.PATH.read_text())
        if current < self.need:
            self.PATH.write_text(f"{self.need}\n")
            self.old = current
        return self

    def __exit__(self, *exc: object) -> None:
        if self.old is not None:
            self.PATH.write_text(f"{self.old}\n")


def run_scale(args: argparse.Namespace, runner: Any, host: str) -> int:
    """The --scale benchmark; ``runner`` is inventory.py's Runner."""
    from inventory import SideFailed

    load_before = os.getloadavg()[0]
    runs = args.runs if args.runs is not None else RUNS
    cmds = commands(args.sockscope, not args.no_ss)
    print(f"machine: {host}; load average {load_before:.2f}")
    workers = max(16, -(-args.sockets // PER_WORKER))
    # With no load: each command's peak RSS, to tell what the sockets add.
    empty = {name: runner.whole(argv, name)["maxrss_kib"] for name, argv in cmds.items()}
    with FileMax(2 * args.sockets + 100_000) as file_max, \
            Load(n_sockets=args.sockets, workers=workers, owners_witness=False) as load:
        counts = load.counts
        print(f"load: {counts['tcp']} established loopback TCP sockets (+ {counts['udp']} UDP, "
              f"{counts['unix']} unix) held by {len(load.pids)} processes, built in "
              f"{load.build_seconds:.1f} s; ss -tan sees {load.seen['tcp']} established"
              + (f"; fs.file-max raised from {file_max.old} for the run" if file_max.old else ""))
        # Untimed: each command lists what the load holds (lines of output, header included).
        lines = {name: runner.run(argv, name, stdout=subprocess.PIPE)["stdout"].count(b"\n")
                 for name, argv in cmds.items() if not name.startswith("ss")}
        print("check: lines printed: " + ", ".join(f"{n} {c}" for n, c in lines.items()))
        short = [n for n, c in lines.items() if c < counts["tcp"]]
        if short:
            raise SideFailed(f"{', '.join(short)}: fewer lines than the load's {counts['tcp']} sockets")
        print(f"running {runs} runs of each command, interleaved ...", flush=True)
        names = list(cmds)
        results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for _ in range(runs):
            for name in names:
                results[name].append(runner.whole(cmds[name], name))
                print(f"  {name}: {results[name][-1]['wall']:.2f} s, "
                      f"{results[name][-1]['maxrss_kib'] / 1024:.1f} MiB", flush=True)
        api = {}
        for name, (module, call) in API_CALLS.items():
            try:
                api[name] = runner.api(API_CALL.format(module=module, call=call), name)
            except SideFailed as exc:  # psutil missing, say: the rest still stands
                print(f"  {name}: {exc}")
    time_wait = time_wait_tcp()
    load_after = os.getloadavg()[0]
    report = report_scale(args.sockets, counts, results, empty, api)
    print(report)
    print(f"teardown: {time_wait} TCP sockets in TIME_WAIT left; 1-min load average at the end "
          f"{load_after:.2f} (the benchmark's own work included)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": host, "mode": "scale", "sockets": args.sockets, "runs": runs,
            "load": counts, "workers": workers, "lines": lines, "results": results,
            "empty_maxrss_kib": empty, "api": api, "loadavg_before": load_before,
            "loadavg_after": load_after, "time_wait_after": time_wait}, indent=1) + "\n")
        print(f"raw figures: {args.json}")
    return 0


def report_scale(n: int, counts: dict[str, int], results: dict[str, list[dict[str, Any]]],
                 empty: dict[str, int | None], api: dict[str, dict[str, Any]]) -> str:
    def med(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in results[name]))

    out = [f"\nwhole process, output to /dev/null, {n:,} established TCP sockets "
           f"(medians of {len(next(iter(results.values())))} runs)",
           f"  {'command':<28} {'wall s':>8} {'peak RSS':>10} {'no load':>9} {'per socket':>11}"]
    for name in results:
        wall, rss = med(name, "wall"), med(name, "maxrss_kib")
        base = empty.get(name)
        per = f"{(rss - base) * 1024 / counts['tcp']:8.0f} B" if base is not None else "n/a"
        out.append(f"  {name:<28} {wall:8.2f} {rss / 1024:7.1f} MiB {(base or 0) / 1024:5.1f} MiB "
                   f"{per:>11}")
    if "ss -tanp" in results:
        ss_wall, ss_rss = med("ss -tanp", "wall"), med("ss -tanp", "maxrss_kib")
        checks = [("sockscope ls -t --jsonl", "wall", ss_wall, 0.25),
                  ("sockscope ls -t --jsonl", "maxrss_kib", ss_rss, 1.5),
                  ("sockscope ls -t", "maxrss_kib", ss_rss, 3.0)]
        out.append("\nratios to ss -tanp (targets at 200,000 sockets)")
        for name, key, anchor, target in checks:
            ratio = med(name, key) / anchor
            what = "wall" if key == "wall" else "peak RSS"
            out.append(f"  {name + ' ' + what:<38} {ratio:5.2f}x   target <= {target:.2f}x  "
                       f"{'PASS' if ratio <= target else 'MISS'}")
    if api:
        out.append("\nin process, one call in a fresh interpreter")
        for name, r in api.items():
            out.append(f"  {name:<40} {r['seconds']:7.2f} s  peak RSS {r['maxrss_kib'] / 1024:7.1f} MiB"
                       f"  ({r['sockets']} found)")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit("run bench/inventory.py --scale")
