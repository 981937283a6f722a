"""``sockscope top`` benchmark: its CPU and accuracy next to nethogs, the cost of
one sample next to ``ss -tanpi``, and the terminal UI libraries' costs.

Everything runs inside the benchmark sandbox (bench/sandbox.py: a namespace with
no route off the host), in namespaces joined by a veth pair (tests/topology.py).

1. Load: iperf3 pushes TCP at 1 Gbit/s and at 10 Gbit/s over the veth, and UDP
   at 100,000 datagrams/s (64-byte payloads), ``--seconds`` each (default 10).
   Side by side on the same run: ``sockscope top --jsonl --interval 1`` (every
   namespace, as it runs by default) and ``nethogs -t -d 1`` on the sender's veth
   (nethogs sees one namespace; it does not count UDP per process at all). For
   each: CPU seconds over the run as % of one core (utime + stime of the process),
   and the bytes it credited to the iperf3 sender against what iperf3 itself
   reports. For top the eBPF programs' own kernel time (``bpf_stats_enabled``
   run_time_ns; it runs in the senders' and receivers' context, not top's) is
   reported beside it. During the UDP load also ``top --source capture -N`` (the
   fallback where eBPF may not run: a header-only capture of the namespace's
   interfaces); its CPU and the bytes it credited.
2. 20,000 established TCP sockets (bench/load.py): one ``Sampler.collect()`` of
   their namespace (what each refresh of ``top -N`` does) against one ``ss -tanpi``
   run (one namespace too), interleaved; and once, one collect of every namespace.
3. UI libraries: import time of curses, Rich and Textual (a fresh interpreter
   each, minus one that imports nothing), and the time to draw a 30-row table
   with curses (in a pseudo-terminal) and with Rich.

Run as root: ``.venv/bin/python bench/top.py`` (iperf3, nethogs: ``bash
scripts/setup.sh --bench``; Rich and Textual come with the bench extra).
``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import sandbox  # noqa: E402
from topology import Netns, Topology  # noqa: E402

SOCKSCOPE = [sys.executable, "-m", "sockscope"]
ADDR_A, ADDR_B = "198.51.100.1", "198.51.100.2"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (its threads included), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} cores, {model}, kernel {platform.release()}, Python {platform.python_version()}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def bpf_stats(enabled: bool) -> None:
    Path("/proc/sys/kernel/bpf_stats_enabled").write_text("1" if enabled else "0")


def program_time() -> tuple[int, int]:
    """Kernel time (ns) and runs of top's eBPF programs, summed."""
    from sockscope.ebpf.syscall import program_stats

    return program_stats("ssc_")


def wait_listening(topo: Topology, ns: Netns, port: int, udp: bool = False) -> None:
    for _ in range(200):
        out = topo.run(ns, "ss", "-Hln" + ("u" if udp else "t"), f"sport = :{port}")
        if out.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"iperf3 did not start on port {port}")


def nethogs_bytes(text: str, pid: int) -> tuple[int, int] | None:
    """nethogs -t -v 2 (totals in bytes): the last (sent, received) of the process."""
    found = None
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and re.search(rf"/{pid}/\d+$", parts[0]):
            found = (int(float(parts[1])), int(float(parts[2])))
    return found


def top_bytes(text: str, pid: int) -> tuple[int, int]:
    tx = rx = 0
    for line in text.splitlines():
        for row in json.loads(line)["processes"]:
            if row["pid"] == pid:
                tx += row["tx_bytes"]
                rx += row["rx_bytes"]
    return tx, rx


def run_load(topo: Topology, a: Netns, b: Netns, name: str, iperf_args: list[str], seconds: float,
             port: int) -> dict[str, Any]:
    udp = "-u" in iperf_args
    server = topo.spawn(b, "iperf3", "-s", "-1", "-B", ADDR_B, "-p", str(port), stdout=subprocess.DEVNULL)
    wait_listening(topo, b, port)
    with tempfile.TemporaryDirectory() as tmp:
        top_out = open(Path(tmp) / "top.jsonl", "w+")
        hogs_out = open(Path(tmp) / "nethogs.txt", "w+")
        top = subprocess.Popen([*SOCKSCOPE, "top", "--jsonl", "--interval", "1"], stdout=top_out,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        # The same, narrowed to the sender's namespace: what nethogs looks at.
        top_n_out = open(Path(tmp) / "top_n.jsonl", "w+")
        top_n = subprocess.Popen([*SOCKSCOPE, "top", "--jsonl", "--interval", "1", "-N", a.name],
                                 stdout=top_n_out, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        hogs = topo.spawn(a, "nethogs", "-t", "-v", "2", "-d", "1", "veth-a", stdout=hogs_out)
        time.sleep(3)  # both started and settled
        bpf_stats(True)
        kernel0 = program_time()
        top0, hogs0, top_n0 = cpu_seconds(top.pid), cpu_seconds(hogs.pid), cpu_seconds(top_n.pid)
        capture = None
        if udp:  # the fallback where eBPF may not run, on the sender's namespace
            capture_out = open(Path(tmp) / "capture.jsonl", "w+")
            capture = subprocess.Popen([*SOCKSCOPE, "top", "--jsonl", "--interval", "1", "-N", a.name,
                                        "--source", "capture"], stdout=capture_out,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
            time.sleep(2)
            capture0 = cpu_seconds(capture.pid)
        t0 = time.monotonic()
        client = topo.spawn(a, "iperf3", "-J", "-c", ADDR_B, "-p", str(port), "-t", str(seconds), *iperf_args)
        report = json.loads(client.communicate(timeout=seconds + 60)[0])
        wall = time.monotonic() - t0
        top1, hogs1, top_n1 = cpu_seconds(top.pid), cpu_seconds(hogs.pid), cpu_seconds(top_n.pid)
        kernel1 = program_time()
        bpf_stats(False)
        capture_cpu = cpu_seconds(capture.pid) - capture0 if capture is not None else None
        time.sleep(2.5)  # the last samples
        for proc in (top, top_n, *([capture] if capture is not None else [])):
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        hogs.send_signal(signal.SIGINT)
        hogs.wait(timeout=30)
        server.wait(timeout=30)
        texts = []
        for f in (top_out, top_n_out, hogs_out):
            f.seek(0)
            texts.append(f.read())
            f.close()
        top_text, top_n_text, hogs_text = texts
        capture_text = ""
        if capture is not None:
            capture_out.seek(0)
            capture_text = capture_out.read()
            capture_out.close()
    end = report["end"]
    sent = end["sum"]["bytes"] if udp else end["sum_sent"]["bytes"]
    packets = end["sum"].get("packets") if udp else None
    tx, _ = top_bytes(top_text, client.pid)
    tx_n, _ = top_bytes(top_n_text, client.pid)
    hogs_seen = nethogs_bytes(hogs_text, client.pid)
    return {
        "load": name, "seconds": round(wall, 2), "iperf3_sent_bytes": sent,
        "rate": f"{sent * 8 / wall / 1e9:.2f} Gbit/s"
                + (f", {packets / wall:,.0f} datagrams/s" if packets else ""),
        "top_cpu_percent": round(100 * (top1 - top0) / wall, 1),
        "top_one_netns_cpu_percent": round(100 * (top_n1 - top_n0) / wall, 1),
        "nethogs_cpu_percent": round(100 * (hogs1 - hogs0) / wall, 1),
        "bpf_kernel_percent": round(100 * (kernel1[0] - kernel0[0]) / 1e9 / wall, 2),
        "bpf_runs": kernel1[1] - kernel0[1],
        "top_sent_bytes": tx, "top_error_percent": round(100 * (tx - sent) / sent, 2),
        "top_one_netns_sent_bytes": tx_n, "top_one_netns_error_percent": round(100 * (tx_n - sent) / sent, 2),
        "nethogs_sent_bytes": hogs_seen[0] if hogs_seen else None,
        "nethogs_error_percent": round(100 * (hogs_seen[0] - sent) / sent, 2) if hogs_seen else None,
        **({} if capture_cpu is None else {
            "top_capture_cpu_percent": round(100 * capture_cpu / wall, 1),
            "top_capture_sent_bytes": (captured := top_bytes(capture_text, client.pid)[0]),
            "top_capture_error_percent": round(100 * (captured - sent) / sent, 2)}),
    }


def loads(seconds: float, quick: bool) -> list[dict[str, Any]]:
    results = []
    with Topology() as topo:
        a, b = topo.add_netns("a"), topo.add_netns("b")
        topo.add_veth(a, b, f"{ADDR_A}/30", f"{ADDR_B}/30", name_a="veth-a", name_b="veth-b")
        cases = [("TCP 1 Gbit/s", ["-b", "1G"]), ("TCP 10 Gbit/s", ["-b", "10G"]),
                 ("UDP 100,000 datagrams/s", ["-u", "-l", "64", "-b", str(100_000 * 64 * 8)])]
        for i, (name, args) in enumerate(cases[:1] if quick else cases):
            results.append(run_load(topo, a, b, name, args, seconds, 5301 + i))
    return results


def sample_vs_ss(sockets: int, runs: int) -> dict[str, Any]:
    from load import Load
    from sockscope.traffic import Sampler

    with Load(n_sockets=sockets) as load:
        # ss -tanpi reads one namespace (this one, where the load is): so does the
        # first sampler; the second reads every namespace on the host, as top does
        # by default, and is timed once beside one more ss run.
        here = Sampler(str(os.getpid()))
        everywhere = Sampler()
        try:
            ours, theirs = [], []
            for _ in range(runs):
                t = time.perf_counter()
                here.collect()
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                subprocess.run(["ss", "-tanpi"], stdout=subprocess.DEVNULL, check=True)
                theirs.append(time.perf_counter() - t)
            t = time.perf_counter()
            everywhere.collect()
            all_namespaces = time.perf_counter() - t
        finally:
            here.close()
            everywhere.close()
        established = load.counts["tcp"]
    return {"established": established, "runs": runs,
            "collect_one_netns_median_s": round(statistics.median(ours), 4),
            "ss_tanpi_median_s": round(statistics.median(theirs), 4),
            "ratio": round(statistics.median(ours) / statistics.median(theirs), 2),
            "collect_every_netns_once_s": round(all_namespaces, 4)}


UI_IMPORTS = {"curses": "import curses", "rich": "import rich.console, rich.live, rich.table",
              "textual": "import textual.app, textual.widgets"}

CURSES_DRAW = r"""
import curses, os, pty, sys, time  # noqa: E401
rows = [tuple(f"{c}{r:05d}" for c in "abcdefghij") for r in range(30)]
pid, fd = pty.fork()
if pid == 0:
    import fcntl, struct, termios
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))  # 40 rows, 150 columns
    os.environ["TERM"] = "xterm-256color"
    def main(scr):
        n = 200
        t = time.perf_counter()
        for i in range(n):
            scr.erase()
            for y, row in enumerate(rows):
                scr.addstr(y, 0, " ".join(row)[:140])
            scr.refresh()
        with open(sys.argv[1], "w") as out:
            out.write(f"{(time.perf_counter() - t) / n}\n")
    curses.wrapper(main)
    os._exit(0)
while True:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
os.waitpid(pid, 0)
"""

RICH_DRAW = r"""
import io, sys, time
from rich.console import Console
from rich.table import Table
rows = [tuple(f"{c}{r:05d}" for c in "abcdefghij") for r in range(30)]
console = Console(file=io.StringIO(), width=150, height=32, force_terminal=True, color_system="standard")
n = 200
t = time.perf_counter()
for i in range(n):
    table = Table(*[c * 3 for c in "abcdefghij"])
    for row in rows:
        table.add_row(*row)
    console.print(table)
print((time.perf_counter() - t) / n)
"""


def ui_libraries(runs: int) -> dict[str, Any]:
    def started(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    base: list[float] = []
    times: dict[str, list[float]] = {name: [] for name in UI_IMPORTS}
    for _ in range(runs):
        base.append(started("pass"))
        for name, code in UI_IMPORTS.items():
            times[name].append(started(code))
    floor = statistics.median(base)
    out: dict[str, Any] = {f"import_{name}_ms": round(1000 * (statistics.median(t) - floor), 1)
                           for name, t in times.items()}
    with tempfile.NamedTemporaryFile("r") as result:
        subprocess.run([sys.executable, "-c", CURSES_DRAW, result.name], check=True)
        out["draw_curses_ms"] = round(1000 * float(result.read()), 3)
    rich = subprocess.run([sys.executable, "-c", RICH_DRAW], capture_output=True, text=True, check=True)
    out["draw_rich_ms"] = round(1000 * float(rich.stdout.strip()), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sockets", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="a smoke run: shorter, one load")
    parser.add_argument("--only", choices=("loads", "sockets", "ui"), action="append")
    args = parser.parse_args()
    sandbox.enter()
    if args.quick:
        args.seconds, args.sockets, args.runs = 3.0, 2000, 3
    only = set(args.only or ("loads", "sockets", "ui"))
    print(f"machine: {machine()}")
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load_average()}")
    if "loads" in only:
        for row in loads(args.seconds, args.quick):
            print(json.dumps(row))
    if "sockets" in only:
        print(json.dumps({"sample_vs_ss": sample_vs_ss(args.sockets, args.runs)}))
    if "ui" in only:
        print(json.dumps({"ui": ui_libraries(args.runs)}))
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, load average {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
