"""Reading and decoding benchmark: summarising a capture file and counting its flows.

Writes a 1,000,000-packet pcap (64-byte-class Ethernet frames: UDP and TCP over
IPv4 and IPv6, 256 flows), then times whole processes side by side, interleaved:

- summaries to /dev/null: ``sockscope capture -r FILE``, ``tcpdump -nr FILE``, and
  dpkt and scapy scripts that decode each packet and print the same kind of line;
- flows: ``sockscope.capture.flows.count_flows`` (the API of ``capture -r FILE
  --flows``) against dpkt counting (src, dst, sport, dport, proto) in a loop.

scapy is about a thousand times slower than tcpdump, so it reads the first
``--scapy-packets`` (default 20,000) and its rate is reported from those.
Prints packets per second and ratios against dpkt (target: sockscope >= 10x dpkt).
Run: ``.venv/bin/python bench/capture_read.py`` (dpkt and scapy come with
``bash scripts/setup.sh --bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOCKSCOPE = str(Path(sys.executable).with_name("sockscope"))

DPKT_SUMMARY = """
import socket, sys, dpkt
out = open("/dev/null", "w")
n = 0
with open(sys.argv[1], "rb") as f:
    for ts, buf in dpkt.pcap.Reader(f):
        eth = dpkt.ethernet.Ethernet(buf)
        ip = eth.data
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
            v6 = isinstance(ip, dpkt.ip6.IP6)
            fam, tag = (socket.AF_INET6, "IP6") if v6 else (socket.AF_INET, "IP")
            src, dst = socket.inet_ntop(fam, ip.src), socket.inet_ntop(fam, ip.dst)
            l4 = ip.data
            if isinstance(l4, dpkt.udp.UDP):
                line = f"{ts:.6f} {tag} {src}.{l4.sport} > {dst}.{l4.dport}: UDP, length {l4.ulen - 8}"
            elif isinstance(l4, dpkt.tcp.TCP):
                line = (f"{ts:.6f} {tag} {src}.{l4.sport} > {dst}.{l4.dport}: Flags {l4.flags}, "
                        f"seq {l4.seq}, ack {l4.ack}, win {l4.win}, length {len(l4.data)}")
            else:
                line = f"{ts:.6f} {tag} {src} > {dst}"
        else:
            line = f"{ts:.6f} ethertype {eth.type}"
        out.write(line + "\\n")
        n += 1
print(n)
"""

DPKT_FLOWS = """
import sys, dpkt
from collections import Counter
flows = Counter()
n = 0
with open(sys.argv[1], "rb") as f:
    for ts, buf in dpkt.pcap.Reader(f):
        ip = dpkt.ethernet.Ethernet(buf).data
        n += 1
        if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) and isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            flows[(ip.src, ip.dst, ip.data.sport, ip.data.dport, ip.p if hasattr(ip, "p") else ip.nxt)] += 1
print(n, len(flows))
"""

SOCKSCOPE_FLOWS = """
import sys
from sockscope.capture.flows import count_flows
flows = count_flows(sys.argv[1])
print(sum(flows.values()), len(flows))
"""

SCAPY_SUMMARY = """
import sys
from scapy.all import PcapReader
out = open("/dev/null", "w")
n = 0
limit = int(sys.argv[2])
for pkt in PcapReader(sys.argv[1]):
    out.write(pkt.summary() + "\\n")
    n += 1
    if n >= limit:
        break
print(n)
"""


def make_file(path: str, packets: int) -> None:
    from sockscope.packets import ACK, PSH, TCP, UDP, Ethernet, IPv4, IPv6, stack
    from sockscope.pcap import PcapWriter, Record

    frames = []
    eth = Ethernet.build(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for i in range(256):
        ip = (IPv6.build(src="2001:db8::1", dst=f"2001:db8::{i + 2:x}") if i % 8 == 7
              else IPv4.build(src="10.0.0.1", dst=f"10.0.1.{i}"))  # fmt: skip
        if i % 4 == 3:
            l4 = TCP.build(sport=40000 + i, dport=5001, seq=i, ack=7, flags=PSH | ACK)
            frames.append(stack(eth, ip, l4, payload=b"x" * 6))
        else:
            frames.append(stack(eth, ip, UDP.build(sport=40000 + i, dport=5000), payload=b"x" * 18))
    with PcapWriter(path, 1, nanosecond=False) as w:
        t0 = 1_700_000_000_000_000_000
        for i in range(packets):
            data = frames[i & 255]
            w.write(Record(t0 + i * 1000, data, len(data)))


def timed(argv: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {proc.stderr[-500:]}")
    return elapsed, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scapy-packets", type=int, default=20_000)
    ap.add_argument("--quick", action="store_true", help="100k packets, 1 run, 2,000 for scapy")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.quick:
        args.packets, args.runs, args.scapy_packets = 100_000, 1, 2_000
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="ssc-bench-read-") as tmp:
        path = os.path.join(tmp, "bench.pcap")
        make_file(path, args.packets)
        scripts = {}
        programs = {"dpkt_summary": DPKT_SUMMARY, "dpkt_flows": DPKT_FLOWS,
                    "sockscope_flows": SOCKSCOPE_FLOWS, "scapy_summary": SCAPY_SUMMARY}  # fmt: skip
        for name, text in programs.items():
            scripts[name] = os.path.join(tmp, name + ".py")
            Path(scripts[name]).write_text(text)
        sides = {
            "tcpdump -nr": ["sh", "-c", f"tcpdump -nr {path} > /dev/null 2>&1"],
            "sockscope capture -r": ["sh", "-c", f"{SOCKSCOPE} capture -r {path} > /dev/null"],
            "dpkt summary": [py, scripts["dpkt_summary"], path],
            "sockscope API flows": [py, scripts["sockscope_flows"], path],
            "dpkt flows": [py, scripts["dpkt_flows"], path],
        }
        times: dict[str, list[float]] = {k: [] for k in sides}
        for _ in range(args.runs):
            for name, argv in sides.items():
                elapsed, _out = timed(argv)
                times[name].append(elapsed)
                print(f"  {name:22s} {elapsed:7.3f} s", flush=True)
        scapy_s, out = timed([py, scripts["scapy_summary"], path, str(args.scapy_packets)])
        scapy_n = int(out.split()[0])
    rates = {k: args.packets / statistics.median(v) for k, v in times.items()}
    rates["scapy summary"] = scapy_n / scapy_s
    print(f"\n{args.packets:,} packets, medians of {args.runs} whole-process runs", end="")
    print(f" (scapy: {scapy_n:,} packets):")
    for name, rate in rates.items():
        print(f"  {name:22s} {rate:>12,.0f} packets/s")
    summary_ratio = rates["sockscope capture -r"] / rates["dpkt summary"]
    flows_ratio = rates["sockscope API flows"] / rates["dpkt flows"]
    print(f"  sockscope capture -r / dpkt summary: {summary_ratio:.1f}x (target >= 10x)")
    print(f"  sockscope API flows / dpkt flows:    {flows_ratio:.1f}x (target >= 10x)")
    vs_tcpdump = rates["sockscope capture -r"] / rates["tcpdump -nr"]
    print(f"  sockscope capture -r / tcpdump -nr:  {vs_tcpdump:.2f}")
    print(f"  machine: {platform.machine()} {os.cpu_count()} cores, kernel {platform.release()}, "
          f"Python {platform.python_version()}, load {os.getloadavg()}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "times": times, "summary_ratio": summary_ratio,
                                               "flows_ratio": flows_ratio}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
