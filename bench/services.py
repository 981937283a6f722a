"""Services benchmark: what a policy costs a Unix server, and how decisions scale.

1. A Unix request-response server (sockscope's asyncio server, one process)
   answered by 1,000 concurrent clients (another process, asyncio), with a peer
   policy (``ALL : uid:0 gid:0 : allow`` after 20 rules that do not match) and
   without one, interleaved. Two client behaviours: persistent connections (the
   check runs once per connection) and a new connection per request (the check,
   SO_PEERCRED + SO_PEERPIDFD + the decision, runs on every request). Target:
   the policy costs at most 10% of requests per second.
2. `Policy.decide` for a client address against policies of 10 ... 10,000
   address rules, against a plain in-order scan of the same rules (what
   tcp_wrappers does). Target: under 10 us per decision, flat in the rule count.

Run: ``.venv/bin/python bench/services.py`` (a minute or two; no root needed).
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLIENTS = 1000

SERVER = r"""
import asyncio, sys
from sockscope.policy import Policy
from sockscope.services import aio

async def handler(reader, writer, peer):
    while True:
        line = await reader.readline()
        if not line:
            return
        writer.write(line)
        await writer.drain()

async def main():
    policy = Policy.load(sys.argv[2]) if sys.argv[2] != "-" else None
    server = await aio.start_server("unix:" + sys.argv[1], handler, policy=policy, backlog=4096)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()
    server.close_clients()
    await server.wait_closed()

asyncio.run(main())
"""

CLIENT = r"""
import asyncio, json, sys, time
path, clients, seconds, fresh = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "fresh"

async def one(deadline, counts):
    reader = writer = None
    while time.monotonic() < deadline:
        if writer is None:
            reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"ping\n")
        await writer.drain()
        if await reader.readline() != b"ping\n":
            raise SystemExit("bad answer")
        counts[0] += 1
        if fresh:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()

async def main():
    counts = [0]
    start = time.monotonic()
    await asyncio.gather(*(one(start + seconds, counts) for _ in range(clients)))
    print(json.dumps({"requests": counts[0], "seconds": time.monotonic() - start}))

asyncio.run(main())
"""


def rps(path: str, policy: str, mode: str, seconds: float) -> float:
    import json

    server = subprocess.Popen([sys.executable, "-c", SERVER, path, policy], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        out = subprocess.run([sys.executable, "-c", CLIENT, path, str(CLIENTS), str(seconds), mode],
                             capture_output=True, text=True, timeout=seconds + 120, check=True)
        result = json.loads(out.stdout)
        return float(result["requests"] / result["seconds"])
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def server_bench(rounds: int, seconds: float) -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # inherited by the children
    with tempfile.TemporaryDirectory(prefix="ssc-bench-") as tmp:
        policy = Path(tmp, "peer.policy")
        lines = [f"rr : uid:{1000 + i} : deny" for i in range(20)] + ["rr : uid:0 gid:0 : allow"]
        Path(policy).write_text("\n".join(lines).replace("rr :", "ALL :") + "\n")
        path = os.path.join(tmp, "rr.sock")
        for mode in ("persistent", "fresh"):
            without: list[float] = []
            with_policy: list[float] = []
            for _ in range(rounds):
                without.append(rps(path, "-", mode, seconds))
                with_policy.append(rps(path, str(policy), mode, seconds))
            a, b = statistics.median(without), statistics.median(with_policy)
            label = "connection per request" if mode == "fresh" else "persistent connections"
            print(f"unix server, {CLIENTS} clients, {label}: without policy {a:,.0f} req/s, "
                  f"with peer policy {b:,.0f} req/s, cost {100 * (1 - b / a):+.1f}% (target <= 10%)")
            print(f"  runs without: {', '.join(f'{x:,.0f}' for x in without)}; "
                  f"with: {', '.join(f'{x:,.0f}' for x in with_policy)}")


def make_policy_text(n: int, rng: random.Random) -> str:
    lines = []
    for i in range(n - 1):
        plen = rng.choice([8, 12, 16, 20, 24, 28, 32])
        net = ipaddress.ip_network(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
                                   f"{rng.randrange(256)}/{plen}", strict=False)
        daemon = rng.choice(["sshd", "ALL", "httpd"])
        lines.append(f"{daemon} : {net} : {rng.choice(['allow', 'deny'])}")
        if i % 1000 == 999:
            lines.append(f"sshd : [fd{rng.randrange(16):x}{i % 16:x}::]/16 : allow")
    lines.append("ALL : ALL : deny")
    return "\n".join(lines) + "\n"


def per_call(fn: Callable[[Any], object], items: list[Any], repeat: int = 5) -> float:
    """Median microseconds per call over the items."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        for item in items:
            fn(item)
        times.append((time.perf_counter() - t) / len(items) * 1e6)
    return statistics.median(times)


def in_order_scan(rules: list[Any], daemon: str, address: Any) -> object:
    """What tcp_wrappers does: every rule in order until one matches."""
    from sockscope.policy import Client

    client = Client(address=address, resolver=lambda _: None)
    for rule in rules:
        if rule.daemons.matches(daemon) and rule.clients.matches(client):
            return rule
    return None


def decision_bench() -> None:
    from sockscope.policy import Policy

    rng = random.Random(5)
    addresses = [ipaddress.ip_address(f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}."
                                      f"{rng.randrange(256)}") for _ in range(20000)]
    strings = [str(a) for a in addresses]
    print("decisions (Policy.decide('sshd', address)), us per decision, median of 5:")
    print(f"  {'rules':>6} {'load ms':>8} {'indexed str':>12} {'indexed addr':>13} "
          f"{'in-order scan':>14} {'ratio':>7}")
    for n in (10, 100, 1000, 10000):
        text = make_policy_text(n, rng)
        t = time.perf_counter()
        policy = Policy.parse(text)
        load_ms = (time.perf_counter() - t) * 1000
        decide = functools.partial(policy.decide, "sshd")
        by_str = per_call(decide, strings)
        by_addr = per_call(decide, addresses)
        scan = functools.partial(in_order_scan, policy.rules, "sshd")
        linear = per_call(scan, addresses[: max(200, 20000 // max(1, n // 50))], repeat=3)
        for a in addresses[:500]:  # the index gives the same answers as the scan
            assert policy.decide("sshd", a).rule is scan(a)
        print(f"  {n:>6} {load_ms:>8.1f} {by_str:>12.2f} {by_addr:>13.2f} {linear:>14.1f} "
              f"{linear / by_addr:>6.0f}x")


def check_cost_bench() -> None:
    """The per-connection check alone: credentials + decision, on a socketpair."""
    import socket

    from sockscope.policy import Policy
    from sockscope.services.server import Guarded

    a, b = socket.socketpair()
    rules = [f"ALL : uid:{1000 + i} : deny" for i in range(20)] + ["ALL : uid:0 gid:0 : allow"]
    with_policy = Guarded(Policy.parse("\n".join(rules) + "\n"), "rr")
    without = Guarded(None, "rr")
    items = list(range(20000))
    t_with = per_call(lambda _: with_policy.check_connection(a, ""), items)
    t_without = per_call(lambda _: without.check_connection(a, ""), items)
    a.close()
    b.close()
    print(f"check at accept, per connection: {t_with:.2f} us with the peer policy "
          f"(SO_PEERCRED + decision), {t_without:.2f} us without")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {os.cpu_count()} cpus, Linux {platform.release()}, "
          f"Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    decision_bench()
    check_cost_bench()
    if not args.skip_server:
        server_bench(args.rounds, args.seconds)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
