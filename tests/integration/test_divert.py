"""`sockscope divert` on real traffic: left - r1 - right, the divert in the router on
the forward hook (or in a host), UDP and TCP, IPv4 and IPv6."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from divert_helpers import (
    build,
    csum_errors,
    divert_chains,
    firewall,
    send,
    sink_result,
    start_divert,
    start_sink,
    stop,
)

from privileges import run_as_nobody
from topology import Topology

pytestmark = pytest.mark.needs_root


def test_accepted_packets_arrive_unchanged_ipv4_and_ipv6(topology: Topology) -> None:
    net = build(topology)
    before = firewall(topology, net.router)
    div = start_divert(net, "--rule", "udp dport 5000 forward", "--print")
    sink = start_sink(net, 5000, 1.5)
    texts = [f"packet-{i}" for i in range(10)]
    send(net, net.line.right_addr, 5000, *texts)
    send(net, net.line.right_addr6 or "", 5000, *(t + "-v6" for t in texts))
    got = sink_result(sink)
    out, err, rc = stop(div)
    assert rc == 0, err
    assert sorted(d for d, _ in got) == sorted(
        [t.encode() for t in texts] + [(t + "-v6").encode() for t in texts]
    )
    assert {p for _, p in got} == {f"::ffff:{net.line.left_addr}", net.line.left_addr6}
    lines = out.splitlines()
    assert len(lines) == 20 and all(
        line.startswith("q0 forward") and line.endswith("-> accept") for line in lines
    )
    assert "20 received, 20 accepted, 0 dropped" in err
    assert firewall(topology, net.router) == before  # left as found


def test_drop_filter_and_rewritten_payload(topology: Topology) -> None:
    net = build(topology)
    # Payloads starting with "D" are dropped (tcpdump filter in user space), the rest rewritten.
    div = start_divert(
        net,
        "--rule",
        "udp dport 5000 forward",
        "--drop",
        "(ip and udp[8] = 0x44) or (ip6 and ip6[48] = 0x44)",
        "--rewrite",
        "payload=rewritten!",
    )
    sink = start_sink(net, 5000, 1.5)
    send(net, net.line.right_addr, 5000, "Dropme", "keep1", "Dagain", "keep2")
    send(net, net.line.right_addr6 or "", 5000, "Dsix", "keep6")
    got = sink_result(sink)
    _, err, rc = stop(div)
    assert rc == 0, err
    assert [d for d, _ in got] == [b"rewritten!"] * 3
    assert "6 received, 3 accepted, 3 dropped, 3 rewritten" in err
    assert csum_errors(topology, net.right) == 0  # the receiver checked the new checksums


HANDLER = """
import struct
from sockscope.packets import TCP

def handle(pkt):
    tcp = pkt.get(TCP)
    if tcp is None:
        return "accept"
    data = bytearray(pkt.payload)
    off = tcp._off
    sport, dport = struct.unpack_from("!HH", data, off)
    if dport == 5000:
        struct.pack_into("!H", data, off + 2, 6000)
    elif sport == 6000:
        struct.pack_into("!H", data, off, 5000)
    return bytes(data)
"""

TCP_SERVER = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 6000))
s.listen()
print("ready", flush=True)
for _ in range(2):
    c, _ = s.accept()
    data = b""
    while not data.endswith(b"\n"):
        chunk = c.recv(65536)
        if not chunk:
            break
        data += chunk
    c.sendall(b"echo:" + data)
    c.close()
"""

TCP_CLIENT = r"""
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.create_connection((sys.argv[1], 5000), timeout=5)
c.sendall(b"x" * 100000 + b"\n")
data = b""
while chunk := c.recv(65536):
    data += chunk
print(len(data), data[:5].decode())
"""


@pytest.mark.parametrize(
    ("ipv6", "gso"), [(False, False), (True, False), (False, True)], ids=["ipv4", "ipv6", "ipv4-gso"]
)
def test_tcp_connection_through_a_port_rewriting_divert(
    topology: Topology, tmp_path: Path, ipv6: bool, gso: bool
) -> None:
    net = build(topology)
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    family = "ip6" if ipv6 else "ip"
    extra = ["--gso"] if gso else []  # the queue flag on: GSO packets are handed over whole
    div = start_divert(net, "--rule", f"{family} tcp forward", "--exec", str(handler), *extra)
    host = (net.line.right_addr6 or "") if ipv6 else net.line.right_addr
    server = topology.spawn(net.right, sys.executable, "-c", TCP_SERVER, "::" if ipv6 else "0.0.0.0")
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    result = topology.run(net.left, sys.executable, "-c", TCP_CLIENT, host, timeout=20)
    assert result.stdout.split() == [str(5 + 100001), "echo:"]
    _, err, rc = stop(div)
    assert rc == 0, err
    assert "handler errors" not in err and "rewritten" in err


def test_rules_gone_after_exit_sigterm_and_kill(topology: Topology) -> None:
    net = build(topology)
    before = firewall(topology, net.router)
    div = start_divert(net, "--rule", "udp dport 5000 forward", "--count", "1")
    send(net, net.line.right_addr, 5000, "one")
    _, err, rc = div.communicate(timeout=10), None, div.returncode
    assert rc == 0 and firewall(topology, net.router) == before
    div = start_divert(net, "--rule", "udp dport 5000 forward")
    _, err, rc = stop(div)
    assert rc == 0 and firewall(topology, net.router) == before, err
    # SIGKILL leaves the rules; with --bypass traffic still passes meanwhile.
    div = start_divert(net, "--rule", "udp dport 5000 forward", "--bypass")
    os.killpg(div.pid, signal.SIGKILL)
    div.wait()
    assert divert_chains(topology, net.router)
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "bypassed")
    assert [d for d, _ in sink_result(sink)] == [b"bypassed"]
    # The next run (another queue) removes the dead run's leftovers first.
    div = start_divert(net, "--rule", "udp dport 5001 forward", "--queue", "3", wait_for="DIVERT-3")
    assert all("DIVERT-3" in line for line in divert_chains(topology, net.router))
    _, err, rc = stop(div)
    assert "removed leftover ip filter SOCKSCOPE-DIVERT-0-FWD" in err
    assert firewall(topology, net.router) == before


def test_without_bypass_nobody_listening_drops_until_cleanup(topology: Topology) -> None:
    net = build(topology)
    div = start_divert(net, "--rule", "udp dport 5000 forward")
    os.killpg(div.pid, signal.SIGKILL)
    div.wait()
    sink = start_sink(net, 5000, 0.8)
    send(net, net.line.right_addr, 5000, "lost")
    assert sink_result(sink) == []  # the kernel's NFQUEUE default with no listener: drop
    cleanup = topology.run(net.router, sys.executable, "-m", "sockscope", "divert", "--cleanup")
    assert "SOCKSCOPE-DIVERT-0-FWD" in cleanup.stdout
    assert divert_chains(topology, net.router) == []
    sink = start_sink(net, 5000, 0.8)
    send(net, net.line.right_addr, 5000, "passes")
    assert [d for d, _ in sink_result(sink)] == [b"passes"]


SLOW_FIRST = """
import time
slept = []
def handle(pkt):
    if not slept:
        slept.append(1)
        time.sleep(1.2)
    return "accept"
"""


@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
def test_full_queue_fail_open_or_counted_drops(topology: Topology, tmp_path: Path, fail_open: bool) -> None:
    net = build(topology)
    handler = tmp_path / "slow.py"
    handler.write_text(SLOW_FIRST)
    args = ["--rule", "udp dport 5000 forward", "--maxlen", "1", "--exec", str(handler), "--timeout", "5"]
    div = start_divert(net, *args, *(["--fail-open"] if fail_open else []))
    sink = start_sink(net, 5000, 2.5)
    send(net, net.line.right_addr, 5000, *(f"p{i}" for i in range(8)), gap=0.01)
    got = [d for d, _ in sink_result(sink)]
    _, err, rc = stop(div)
    assert rc == 0, err
    if fail_open:
        assert sorted(got) == sorted(f"p{i}".encode() for i in range(8))
    else:
        assert b"p0" in got and len(got) < 8
        assert f"{8 - len(got)} lost: queue full" in err  # counted and reported, not hidden


def test_a_stalled_handler_does_not_black_hole_traffic(topology: Topology, tmp_path: Path) -> None:
    net = build(topology)
    handler = tmp_path / "stuck.py"
    handler.write_text("import time\ndef handle(pkt):\n    time.sleep(30)\n")
    div = start_divert(net, "--rule", "udp dport 5000 forward", "--exec", str(handler), "--timeout", "0.3")
    sink = start_sink(net, 5000, 2.5)
    send(net, net.line.right_addr, 5000, *(f"p{i}" for i in range(5)), gap=0.05)
    got = sorted(d for d, _ in sink_result(sink))
    assert got == sorted(f"p{i}".encode() for i in range(5))
    os.killpg(div.pid, signal.SIGKILL)
    div.wait()


def test_bad_handlers_get_the_default_verdict_and_are_counted(topology: Topology, tmp_path: Path) -> None:
    net = build(topology)
    handler = tmp_path / "bad.py"
    handler.write_text(
        textwrap.dedent("""
        def handle(pkt):
            if pkt.payload.endswith(b"raise"):
                raise RuntimeError("boom")
            return b"not an IP packet"
        """)
    )
    div = start_divert(net, "--rule", "udp dport 5000 forward", "--exec", str(handler), "--default", "drop")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "raise", "garbage")
    got = sink_result(sink)
    _, err, rc = stop(div)
    assert rc == 0 and got == []
    assert "2 dropped" in err and "2 handler errors" in err
    assert "first handler error: RuntimeError: boom" in err


def test_bad_input(topology: Topology) -> None:
    net = build(topology)
    before = firewall(topology, net.router)
    cli = [sys.executable, "-m", "sockscope", "divert"]
    bad = topology.run(net.router, *cli, "--rule", "udp dport lots", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot parse --rule" in bad.stderr
    div = start_divert(net, "--rule", "udp dport 5000 forward", "--queue", "9")
    with_rules = firewall(topology, net.router)
    busy = topology.run(net.router, *cli, "--rule", "tcp forward", "--queue", "9", check=False)
    assert busy.returncode == 1 and "queue 9 is already bound by another process" in busy.stderr
    assert busy.stderr.count("\n") == 1
    assert firewall(topology, net.router) == with_rules  # nothing added, nothing removed
    stop(div)
    assert firewall(topology, net.router) == before


def test_no_cap_net_admin_is_one_clear_line() -> None:
    # The child drops to nobody before binding: the kernel refuses the queue
    # configuration, so nothing reaches any firewall (queue 4321 is unused here).
    code, err = run_as_nobody(
        ["divert", "--rule", "udp dport 5000", "--queue", "4321"],
        preload=["sockscope.divert.engine", "sockscope.divert.firewall", "sockscope.divert.session"],
    )
    assert code == 1, err
    assert err == "sockscope divert: divert needs CAP_NET_ADMIN (run as root)\n"


def test_python_api_and_asyncio(topology: Topology) -> None:
    net = build(topology)
    script = textwrap.dedent("""
        import asyncio, sys, time
        import sockscope
        from sockscope.packets import UDP

        with sockscope.divert("udp dport 5000 forward", queue=1) as d:
            print("ready", flush=True)
            for pkt in d:
                if pkt[UDP].payload == b"drop":
                    pkt.drop()
                else:
                    pkt.mark = 7
                    pkt.accept()
                if pkt[UDP].payload == b"last":
                    break
            print("sync", d.stats().accepted, d.stats().dropped, flush=True)

        async def main():
            async with sockscope.divert("udp dport 5000 forward", queue=2) as d:
                print("ready", flush=True)
                async for pkt in d.packets():
                    pkt.set_payload(pkt.payload.replace(b"async", b"ASYNC"))
                    pkt.accept()
                    if pkt.payload.endswith(b"last"):
                        break
                print("async", d.stats().modified, flush=True)

        asyncio.run(main())
    """)
    proc = topology.spawn(net.router, sys.executable, "-c", script)
    assert proc.stdout is not None
    for phase, texts, expect in (
        ("sync", ["keep", "drop", "last"], [b"keep", b"last"]),
        ("async", ["async1", "last"], [b"ASYNC1", b"last"]),
    ):
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while not divert_chains(topology, net.router) and time.monotonic() < deadline:
            time.sleep(0.05)
        sink = start_sink(net, 5000, 1.0)
        send(net, net.line.right_addr, 5000, *texts, gap=0.05)
        assert [d for d, _ in sink_result(sink)] == expect, phase
        line = proc.stdout.readline().split()
        assert line[0] == phase
    proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert divert_chains(topology, net.router) == []


def test_workers_share_a_queue_range(topology: Topology) -> None:
    net = build(topology)
    before = firewall(topology, net.router)
    args = ["--rule", "udp dport 5000 forward", "--queue-balance", "0:3", "--workers", "2", "--print"]
    div = start_divert(net, *args)
    queues = topology.run(net.router, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout.splitlines()
    assert sorted(int(line.split()[0]) for line in queues) == [0, 1, 2, 3]
    assert len({line.split()[1] for line in queues}) == 2  # two processes, two queues each
    sink = start_sink(net, 5000, 1.5)
    texts = [f"w{i}" for i in range(20)]
    send(net, net.line.right_addr, 5000, *texts)
    got = sink_result(sink)
    out, err, rc = stop(div)
    assert rc == 0, err
    assert sorted(d for d, _ in got) == sorted(t.encode() for t in texts)
    assert len(out.splitlines()) == 20 and "20 received, 20 accepted" in err
    assert firewall(topology, net.router) == before
    assert topology.run(net.router, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout == ""


def test_jsonl_uid_gid_and_a_cut_packet_is_not_rewritten(topology: Topology) -> None:
    net = build(topology)
    args = ["--rule", "udp dport 5000 output", "--uid-gid", "--print", "--jsonl", "--count", "1"]
    div = start_divert(net, *args, "--copy-range", "30", "--rewrite", "payload=x", ns=net.left)
    sink = start_sink(net, 5000, 1.0)
    sender = f"echo hello > /dev/udp/{net.line.right_addr}/5000"
    topology.run(
        net.left, "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash", "-c", sender
    )
    got = sink_result(sink)
    out, err = div.communicate(timeout=10)
    assert div.returncode == 0, err
    assert [d for d, _ in got] == [b"hello\n"]  # the default verdict: unchanged
    record = json.loads(out)
    assert record["hook"] == "output" and record["out"] == "eth0" and record["in"] is None
    assert (record["uid"], record["gid"]) == (65534, 65534)
    assert record["length"] == 20 + 8 + 6 and record["verdict"] == "accept" and not record["rewritten"]
    assert "1 handler errors" in err and "cut at the copy range" in err


NFT_CHECK = r"""
import sys
from sockscope.divert import parse_rule
from sockscope.divert.firewall import install
from sockscope.divert.nftables import queue_statement_available, render
from sockscope.errors import SockscopeError

# Every rule form rendered for nft must be accepted by the real nft; with "accept"
# in place of the queue statement this works on any kernel.
RULES = ["udp dport 5000", "port 53 iif eth0 forward", "ip6 not host 2001:db8::1",
         "tcp sport 1-1024 mark 7/0xf"]
for text in RULES:
    print(render(parse_rule(text), "sockscope_check", "counter accept"), flush=True)
available = queue_statement_available()
try:
    installed = install(parse_rule("udp dport 5000"), [0], True, 1, 1, backend="nft")
except SockscopeError as exc:
    print("unavailable", available, exc)
else:
    installed.remove()
    print("available", available)
"""


def test_nft_backend_matches_its_probe(topology: Topology) -> None:
    net = build(topology)
    out = topology.run(net.router, sys.executable, "-c", NFT_CHECK).stdout
    scripts, _, verdict = out.rpartition("}\n")
    for script in (scripts + "}\n").split("\n\n"):
        if script.strip():
            topology.run(net.router, "nft", "-f", "-", input=script)
            topology.run(net.router, "nft", "delete", "table", "inet", "sockscope_check")
    words = verdict.split()
    # The probe said whether the nft queue statement works; installing agrees.
    assert (words[0], words[1]) in (("available", "True"), ("unavailable", "False")), verdict
    if words[0] == "unavailable":
        assert "nft failed" in verdict
    assert "sockscope_divert" not in topology.run(net.router, "nft", "list", "tables").stdout


def test_cleanup_removes_dead_owners_nft_tables_only(topology: Topology) -> None:
    net = build(topology)
    ours = os.getpid()
    start = int(Path(f"/proc/{ours}/stat").read_text().rsplit(")", 1)[1].split()[19])
    dead, live = "sockscope_divert_0_999999_1", f"sockscope_divert_1_{ours}_{start}"
    for name in (dead, live):
        topology.run(net.router, "nft", "add", "table", "inet", name)
    cleanup = topology.run(net.router, sys.executable, "-m", "sockscope", "divert", "--cleanup")
    assert cleanup.stdout == f"removed inet table {dead}\n"
    assert topology.run(net.router, "nft", "list", "tables").stdout.split() == ["table", "inet", live]


def test_repeat_with_a_mark_runs_the_hook_again_once(topology: Topology, tmp_path: Path) -> None:
    net = build(topology)
    handler = tmp_path / "repeat.py"
    handler.write_text("def handle(pkt):\n    pkt.mark = 1\n    return 'repeat'\n")
    div = start_divert(net, "--rule", "udp dport 5000 forward mark != 1", "--exec", str(handler), "--print")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "again")
    got = sink_result(sink)
    out, err, rc = stop(div)
    assert rc == 0, err
    assert [d for d, _ in got] == [b"again"]
    assert out.count("-> repeat") == 1 and "1 repeated" in err  # the marked packet skipped the queue


OVERFLOW = r"""
import time
import sockscope

# A receive buffer of a few messages and a reader that sleeps: the kernel cannot
# deliver, drops (no fail-open) and counts; the engine sees ENOBUFS once it reads.
with sockscope.divert("udp dport 5000 forward", queue=4, rcvbuf=4096) as d:
    print("ready", flush=True)
    time.sleep(1.5)
    end = time.monotonic() + 0.5
    d.run(lambda pkt: "accept", until=lambda: time.monotonic() > end)
    kernel = d.stats()
print(kernel.received, kernel.enobufs, kernel.user_dropped, flush=True)
"""


def test_a_full_socket_buffer_is_counted_not_hidden(topology: Topology) -> None:
    net = build(topology)
    proc = topology.spawn(net.router, sys.executable, "-c", OVERFLOW)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while not divert_chains(topology, net.router) and time.monotonic() < deadline:
        time.sleep(0.05)
    sink = start_sink(net, 5000, 2.5)
    send(net, net.line.right_addr, 5000, *(f"p{i}" for i in range(100)), gap=0.001)
    got = sink_result(sink)
    received, enobufs, user_dropped = (int(x) for x in proc.stdout.readline().split())
    proc.wait(timeout=10)
    assert enobufs >= 1 and user_dropped >= 1
    assert received == len(got) and received + user_dropped == 100  # every packet accounted for
