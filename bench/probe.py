"""Probing benchmark: sockscope trace and scan against traceroute, scapy, mtr and nmap.

Builds the probe tests' network (tests/integration/probe_net.py: left - r1 - r2 -
r3 - right, r2 silent, ICMP rate limits off) plus a black-hole address that right
silently drops, and times whole processes run in the left namespace, interleaved
(A B C A B C ...), so drift in the machine's speed hits every tool alike:

1. trace, a path with one silent hop: ``sockscope trace`` (UDP, -I, -T) against
   ``traceroute -n`` (same methods, its defaults: 16 probes in flight, waits
   5,3,10), scapy's ``traceroute`` and ``mtr --report -c 1`` where installed,
   with Python's start-up (``python -c pass``, ``/bin/true`` for the cost of
   ``ip netns exec``) and bench/trace_floor.py (the least a Python traceroute can
   do) in the same rotation, to judge the target: no slower than traceroute by
   more than Python's start-up;
2. trace to a destination that never answers, every tool at 8 hops max and a 2 s
   wait;
3. ``sockscope scan --syn`` of all 65,535 ports against ``nmap -sS -p-``, both
   with one retransmission; ports per second.

Prints medians, ratios, and checks that every side found the right hops / ports.
Run as root after ``bash scripts/setup.sh --bench`` (traceroute, nmap, mtr-tiny;
scapy into .venv only). Tools that are missing are reported, not faked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import probe_net  # noqa: E402

from topology import Topology  # noqa: E402

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))
BLACKHOLE = "203.0.113.2"  # routed to right, which drops it without a word
EXPECTED_PORTS = {probe_net.OPEN: "open", probe_net.DROPPED: "filtered", probe_net.PROHIBITED: "filtered"}

_DROP = f"""
table inet bench_blackhole {{
    chain input_drop {{
        type filter hook prerouting priority 0; policy accept;
        ip daddr {BLACKHOLE} drop
    }}
}}
"""


def timed(netns: str, argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t, proc


def scapy_argv(dest: str, maxttl: int, timeout: float) -> list[str]:
    code = (
        "from scapy.all import conf, traceroute; conf.verb = 0; "
        f"traceroute({dest!r}, maxttl={maxttl}, timeout={timeout}, verbose=0)"
    )
    return [sys.executable, "-c", code]


def have_scapy() -> bool:
    return subprocess.run([sys.executable, "-c", "import scapy"], capture_output=True).returncode == 0


def trace_sides(dest: str, extra: list[str], scapy: tuple[int, float]) -> dict[str, list[str]]:
    sides: dict[str, list[str]] = {}
    for flag in ("-U", "-I", "-T"):
        sides[f"sockscope trace {flag}"] = [SOCKSCOPE, "trace", flag, *extra, dest]
        if shutil.which("traceroute"):
            sides[f"traceroute -n {flag}"] = ["traceroute", "-n", flag, *extra, dest]
    if have_scapy():
        sides["scapy traceroute"] = scapy_argv(dest, *scapy)
    if shutil.which("mtr"):
        m = extra[extra.index("-m") + 1] if "-m" in extra else "30"
        sides["mtr --report -c 1"] = ["mtr", "--report", "-n", "-c", "1", "-m", m, dest]
    return sides


def measure(netns: str, sides: dict[str, list[str]], runs: int) -> dict[str, dict[str, Any]]:
    times: dict[str, list[float]] = {name: [] for name in sides}
    last: dict[str, subprocess.CompletedProcess[str]] = {}
    for _ in range(runs):
        for name, argv in sides.items():
            seconds, proc = timed(netns, argv)
            times[name].append(seconds)
            last[name] = proc
    return {
        name: {
            "median_s": statistics.median(v),
            "min_s": min(v),
            "max_s": max(v),
            "rc": last[name].returncode,
            "stdout": last[name].stdout,
            "stderr": last[name].stderr[-400:],
        }
        for name, v in times.items()
    }


def traceroute_hops(stdout: str) -> list[str | None]:
    """First address per hop line of traceroute / sockscope trace text output."""
    hops: list[str | None] = []
    for line in stdout.splitlines()[1:]:
        words = [w for w in line.split()[1:] if w != "*"]
        hops.append(words[0] if words else None)
    return hops


def report_trace(
    title: str, results: dict[str, dict[str, Any]], expected: list[str | None] | None
) -> list[str]:
    out = [f"\n{title}", f"  {'command':24} {'median s':>9} {'min':>7} {'max':>7}  check"]
    for name, r in results.items():
        check = f"rc={r['rc']}"
        if expected is not None and (name.startswith("sockscope") or name.startswith("traceroute")):
            check += ", hops ok" if traceroute_hops(r["stdout"]) == expected else ", HOPS DIFFER"
        out.append(f"  {name:24} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_s']:7.3f}  {check}")
    for flag in ("-U", "-I", "-T"):
        ours, theirs = results.get(f"sockscope trace {flag}"), results.get(f"traceroute -n {flag}")
        if ours and theirs:
            diff = ours["median_s"] - theirs["median_s"]
            out.append(
                f"  sockscope {flag} vs traceroute {flag}: {ours['median_s'] / theirs['median_s']:.2f}x"
                f" ({diff * 1000:+.0f} ms)"
            )
    scapy = results.get("scapy traceroute")
    if scapy:
        ours = [results[f"sockscope trace {f}"]["median_s"] for f in ("-U", "-I", "-T")]
        out.append(
            f"  scapy time / sockscope time: {scapy['median_s'] / max(ours):.1f}x against the slowest"
            f" sockscope method, {scapy['median_s'] / min(ours):.1f}x against the fastest"
        )
    return out


def report_target(results: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's target: sockscope trace - traceroute <= Python's start-up, taken as
    `python -c pass` (and, stricter, minus what `ip netns exec /bin/true` costs)."""
    med = {name: r["median_s"] for name, r in results.items()}
    py, true = med["python -c pass"], med["/bin/true"]
    out = [
        f"  Python's start-up: python -c pass {py * 1000:.1f} ms (minus ip netns exec /bin/true:"
        f" {(py - true) * 1000:.1f} ms); python trace_floor.py {med['python trace_floor.py'] * 1000:.1f} ms"
    ]
    for flag in ("-U", "-I", "-T"):
        ours, theirs = med.get(f"sockscope trace {flag}"), med.get(f"traceroute -n {flag}")
        if ours is None or theirs is None:
            continue
        over = ours - theirs
        verdict = "met" if over <= py else f"not met by {(over - py) * 1000:.1f} ms"
        out.append(
            f"  target {flag}: sockscope - traceroute = {over * 1000:.1f} ms vs Python's start-up"
            f" {py * 1000:.1f} ms: {verdict}"
        )
    floor_over = med["python trace_floor.py"] - med.get("traceroute -n -U", float("nan"))
    out.append(f"  the floor (trace_floor.py) - traceroute -U = {floor_over * 1000:.1f} ms")
    return out


def scan_sides(dest: str) -> dict[str, list[str]]:
    # Both print only the ports that are not closed (sockscope's text output and
    # nmap's XML summarise the closed ones), so neither pays for 65,535 lines.
    sides = {
        "sockscope scan --syn": [SOCKSCOPE, "scan", "--syn", "-p", "-", "--rate", "0", "--retries", "1", dest]
    }
    if shutil.which("nmap"):
        sides["nmap -sS -p-"] = ["nmap", "-sS", "-p-", "-n", "-Pn", "--max-retries", "1", "-oX", "-", dest]
    return sides


def scan_found(name: str, stdout: str) -> dict[int, str]:
    """Ports that are not closed, and their state."""
    if name.startswith("sockscope"):
        rows = [line.split() for line in stdout.splitlines() if "/tcp " in line]
        return {int(row[0].split("/")[0]): row[1] for row in rows}
    import xml.etree.ElementTree as ET

    root = ET.fromstring(stdout)
    found = {}
    for port in root.iter("port"):
        state = port.find("state")
        found[int(port.get("portid", "0"))] = "" if state is None else state.get("state", "")
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    ap.add_argument("--scan-runs", type=int, default=3, help="runs of each 65,535-port scan (default 3)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw figures here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/probe.py: run as root (namespaces, raw sockets)", file=sys.stderr)
        return 1
    lines = [
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores,"
        f" kernel {platform.release()},"
        f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    ]
    missing = [t for t in ("traceroute", "nmap", "mtr") if not shutil.which(t)] + (
        [] if have_scapy() else ["scapy"]
    )
    if missing:
        lines.append(f"not installed (scripts/setup.sh --bench): {', '.join(missing)}")
    raw: dict[str, Any] = {}
    with Topology() as topo:
        net = probe_net.build(topo)
        left, right = net.line.left.name, net.line.right
        for k, router in enumerate(net.line.routers):
            topo.add_route(router, f"{BLACKHOLE}/32", net.line.links[k + 1].addr_b)
        topo.nft(right, _DROP)
        dest = net.dest(False)
        # Python's start-up and the floor (bench/trace_floor.py) run interleaved with the
        # traces, so that the target -- no slower than traceroute by more than Python's
        # start-up -- is judged on figures taken under the same conditions.
        baselines = {
            "/bin/true": ["/bin/true"],
            "python -c pass": [sys.executable, "-c", "pass"],
            "python trace_floor.py": [sys.executable, str(ROOT / "bench" / "trace_floor.py"), dest],
        }
        r1 = measure(left, {**trace_sides(dest, [], (30, 2.0)), **baselines}, args.runs)
        lines += report_trace(
            f"trace to {dest}: 4 hops, hop 2 silent (defaults; {args.runs} runs)", r1, net.hops(False)
        )
        lines += report_target(r1)
        py = r1["python -c pass"]["median_s"]
        r2 = measure(left, trace_sides(BLACKHOLE, ["-m", "8", "-w", "2"], (8, 2.0)), args.runs)
        lines += report_trace(f"trace to {BLACKHOLE}: never answers (-m 8 -w 2; {args.runs} runs)", r2, None)
        r3 = measure(left, scan_sides(dest), args.scan_runs)
        title = f"scan of all 65,535 TCP ports of {dest} (SYN, one retransmission; {args.scan_runs} runs)"
        lines.append("\n" + title)
        for name, r in r3.items():
            found = scan_found(name, r["stdout"]) if r["rc"] == 0 else {}
            ok = found == EXPECTED_PORTS
            lines.append(
                f"  {name:24} {r['median_s']:7.3f} s  {65535 / r['median_s']:9.0f} ports/s"
                f"  {'ports ok' if ok else 'PORTS DIFFER: ' + str(found)}"
            )
        if len(r3) == 2:
            a, b = (r["median_s"] for r in r3.values())
            lines.append(f"  sockscope rate / nmap rate: {b / a:.2f}x")
        raw = {"silent_hop": r1, "never_answers": r2, "scan": r3, "python_startup_s": py}
    lines.append(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    import sandbox  # bench/: no packet of a benchmark leaves the host

    sandbox.enter()
    sys.exit(main())
