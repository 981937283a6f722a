"""Live capture benchmark: ``sockscope capture -w`` against ``tcpdump -w``, side by side.

Builds two network namespaces joined by a veth pair (tests/topology.py, always torn
down) and blasts 64-byte UDP frames from one end with trafgen (netsniff-ng) while the
capture runs on the other end. Measured, interleaved (tcpdump, sockscope, tcpdump...):

1. full rate: N packets (default 1,000,000) with each tool's default ring; captured,
   dropped and CPU seconds per million packets;
2. with a 2 MiB buffer (``-B 2048`` for both): the highest rate each keeps up with
   at zero drops for ``--sustain`` packets (default 5,000,000): trafgen's full
   speed if nothing is dropped there (then the sender was the limit, and the
   report says so), else found by bisecting trafgen's ``-b`` below it.

The rate reported for a run is what trafgen reached: packets over the wall time of
the trafgen process, start-up included, so slightly low.

Run as root: ``.venv/bin/python bench/capture_live.py`` (needs trafgen and tcpdump:
``bash scripts/setup.sh --bench``). ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from topology import Netns, Topology

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))

# 64-byte frame: Ethernet + IPv4 + UDP + 18 bytes of payload (60 + FCS on a wire).
UDP_PAYLOAD = 18


@dataclass
class Result:
    tool: str
    sent: int
    captured: int
    in_file: int
    dropped: int
    cpu_seconds: float
    seconds: float
    sent_pps: float  # the rate trafgen reached (its own process time, so slightly low)

    @property
    def cpu_per_million(self) -> float:
        return self.cpu_seconds / max(self.in_file, 1) * 1e6


def frame_config(src_mac: str, dst_mac: str) -> str:
    """A trafgen packet: one fixed 64-byte UDP frame, as a byte list."""
    from sockscope.packets import UDP, Ethernet, IPv4, stack

    frame = stack(
        Ethernet.build(src=src_mac, dst=dst_mac),
        IPv4.build(src="10.77.0.1", dst="10.77.0.2", ttl=64),
        UDP.build(sport=9, dport=9),
        payload=bytes(UDP_PAYLOAD),
    )
    return "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n"


def mac_of(topo: Topology, ns: Netns, ifname: str) -> str:
    out = topo.run(ns, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()
    return out


def count_packets(path: str) -> int:
    from sockscope.pcap import open_reader

    with open_reader(path) as reader:
        return sum(1 for _ in reader)


def capture_cmd(tool: str, ns: Netns, ifname: str, path: str, buffer_kib: int | None) -> list[str]:
    if tool == "tcpdump":
        cmd = ["ip", "netns", "exec", ns.name, "tcpdump", "-n", "-i", ifname, "-w", path]
        return cmd + (["-B", str(buffer_kib)] if buffer_kib else [])
    cmd = [SOCKSCOPE, "capture", "-N", ns.name, "-i", ifname, "-w", path]
    return cmd + (["-B", str(buffer_kib)] if buffer_kib else [])


_STATS = re.compile(
    r"(\d+) packets? captured\s+(\d+) packets? received by filter\s+(\d+) packets? dropped by kernel"
)


def run_one(
    topo: Topology,
    sender: Netns,
    receiver: Netns,
    tool: str,
    n: int,
    rate: str | None,
    buffer_kib: int | None,
    cfg: str,
    workdir: str,
) -> Result:
    path = os.path.join(workdir, f"{tool}.pcap")
    proc = subprocess.Popen(
        capture_cmd(tool, receiver, "eth0", path, buffer_kib),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    topo.adopt(proc)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "listening on ..." from both tools
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"{tool} did not start: {line}{proc.stderr.read()}")
    start = time.monotonic()
    gen = ["trafgen", "-o", "eth0", "-i", cfg, "-n", str(n), "-P", "1", "--no-sock-mem", "-Q", "-C"]
    if rate:
        gen += ["-b", rate]
    t0 = time.monotonic()
    topo.run(sender, *gen, timeout=600)
    sent_seconds = time.monotonic() - t0
    # Longer than either tool's ring block timeout (tcpdump's is its 1 s read timeout),
    # so the last partly filled block has reached user space before the stop.
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - start
    err = proc.stderr.read()
    m = _STATS.search(err.replace("\n", " "))
    if not m:
        raise RuntimeError(f"{tool}: no statistics in its output: {err!r}")
    captured, _received, dropped = (int(g) for g in m.groups())
    in_file = count_packets(path)
    os.unlink(path)
    return Result(
        tool, n, captured, in_file, dropped, usage.ru_utime + usage.ru_stime, elapsed, n / sent_seconds
    )


def sustained_rate(topo: Topology, a: Netns, b: Netns, tool: str, n: int, cfg: str, workdir: str,
                   steps: int) -> tuple[int, bool, list[dict[str, object]]]:  # fmt: skip
    """The highest rate (pps) at which ``tool`` with a 2 MiB ring drops nothing.

    First at trafgen's full speed: if nothing is dropped there, the answer is the
    rate trafgen reached, and the sender, not the capture, was the limit (the
    second value says so). Otherwise bisect trafgen's ``-b`` between 50 kpps and
    that rate.
    """
    trials: list[dict[str, object]] = []

    def trial(rate: int | None) -> Result:
        r = run_one(topo, a, b, tool, n, f"{rate}pps" if rate else None, 2048, cfg, workdir)
        ok = r.dropped == 0 and r.in_file >= n
        trials.append({"asked_pps": rate, "sent_pps": round(r.sent_pps), "captured": r.in_file,
                       "dropped": r.dropped, "ok": ok})  # fmt: skip
        asked = f"{rate:>9,}" if rate else "full speed"
        print(f"  {tool:9s} -B 2048, asked {asked}, sent {r.sent_pps:>9,.0f} pps: "
              f"{r.in_file:>9,} in file, {r.dropped:>8,} dropped", flush=True)  # fmt: skip
        return r

    full = trial(None)
    if full.dropped == 0 and full.in_file >= n:
        return round(full.sent_pps), True, trials
    low, high, best = 50_000, round(full.sent_pps), 0
    for _ in range(steps):
        rate = (low + high) // 2
        r = trial(rate)
        if r.dropped == 0 and r.in_file >= n:
            best, low = min(rate, round(r.sent_pps)), rate
        else:
            high = rate
    return best, False, trials


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--sustain", type=int, default=5_000_000, help="packets per zero-drop rate trial")
    ap.add_argument("--runs", type=int, default=3, help="full-rate runs per tool")
    ap.add_argument("--steps", type=int, default=5, help="bisection steps per tool")
    ap.add_argument("--quick", action="store_true", help="100k packets, 1 run, 3 steps of 500k")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.quick:
        args.packets, args.sustain, args.runs, args.steps = 100_000, 500_000, 1, 3
    if os.geteuid() != 0:
        print("capture_live.py: run as root (namespaces, packet sockets)", file=sys.stderr)
        return 1
    report: dict[str, object] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, "
        f"kernel {platform.release()}, Python {platform.python_version()}",
        "load_before": os.getloadavg(),
    }
    with Topology() as topo, tempfile.TemporaryDirectory(prefix="ssc-bench-") as workdir:
        a, b = topo.add_netns("gen"), topo.add_netns("cap")
        topo.add_veth(a, b, "10.77.0.1/24", "10.77.0.2/24", name_a="eth0", name_b="eth0")
        cfg = os.path.join(workdir, "udp64.cfg")
        Path(cfg).write_text(frame_config(mac_of(topo, a, "eth0"), mac_of(topo, b, "eth0")))
        full: dict[str, list[Result]] = {"tcpdump": [], "sockscope": []}
        print(f"full rate, {args.packets:,} packets, default rings:", flush=True)
        for _ in range(args.runs):
            for tool in full:
                r = run_one(topo, a, b, tool, args.packets, None, None, cfg, workdir)
                full[tool].append(r)
                print(
                    f"  {tool:9s} {r.in_file:>9,} in file, {r.dropped:>8,} dropped, "
                    f"{r.cpu_per_million:.2f} CPU s per million, sent at {r.sent_pps:,.0f} pps",
                    flush=True,
                )
        print(f"zero-drop rate with -B 2048, {args.sustain:,} packets per trial:", flush=True)
        rates = {}
        for tool in ("tcpdump", "sockscope"):
            rates[tool] = sustained_rate(topo, a, b, tool, args.sustain, cfg, workdir, args.steps)

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    summary = {
        tool: {
            "captured_median": med([r.in_file for r in rs]),
            "dropped_median": med([r.dropped for r in rs]),
            "cpu_s_per_million_median": round(med([r.cpu_per_million for r in rs]), 3),
        }
        for tool, rs in full.items()
    }
    ratio = rates["sockscope"][0] / rates["tcpdump"][0] if rates["tcpdump"][0] else float("nan")
    sender_limited = [tool for tool, (_r, limited, _t) in rates.items() if limited]
    print("\nsummary:")
    for tool, s in summary.items():
        print(
            f"  {tool:9s} full rate: {s['captured_median']:,} of {args.packets:,} captured, "
            f"{s['dropped_median']:,} dropped, {s['cpu_s_per_million_median']} CPU s per million"
        )
    for tool, (rate, limited, _t) in rates.items():
        note = " (no drops at trafgen's full speed: the sender was the limit)" if limited else ""
        print(f"  {tool:9s} highest zero-drop rate with -B 2048: {rate:,} pps{note}")
    print(f"  sockscope/tcpdump zero-drop rate: {ratio:.2f} (target >= 0.5)")
    print(f"  machine: {report['machine']}, load before {report['load_before']}, after {os.getloadavg()}")
    report.update(
        full={t: [asdict(r) for r in rs] for t, rs in full.items()},
        summary=summary,
        sustained={
            t: {"rate_pps": r, "sender_limited": lim, "trials": tr} for t, (r, lim, tr) in rates.items()
        },
        ratio=ratio,
        sender_limited=sender_limited,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    import sandbox  # bench/: no packet of a benchmark leaves the host

    sandbox.enter()
    sys.exit(main())
