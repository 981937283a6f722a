"""`sockscope divert` on real traffic: left - r1 - right, the divert in the router on
the forward hook (or in a host), UDP and TCP, IPv4 and IPv6: what it selects, what it
changes, what it prints and counts, the Python API. Tests that run a divert compare
the namespace's whole ruleset before and after; how runs end is
test_divert_lifecycle.py."""

from __future__ import annotations

import ast
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from divert_helpers import (
    FORWARD_5000,
    Net,
    add_user_rules,
    build,
    csum_errors,
    ruleset,
    send,
    sink_result,
    start_divert,
    start_sink,
    stop,
    wait_for_tables,
)

from privileges import run_as_nobody
from topology import Topology

pytestmark = pytest.mark.needs_root


def test_accepted_packets_arrive_unchanged_ipv4_and_ipv6(topology: Topology) -> None:
    net = build(topology)
    add_user_rules(topology, net.router, ["-A", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "DROP"])
    before = ruleset(topology, net.router)
    div = start_divert(net, *FORWARD_5000, "--print")
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
    assert ruleset(topology, net.router) == before


def test_drop_filters_and_rewritten_payload(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    # Payloads starting with "D" or "E" are dropped (two --drop filters, any match), the
    # rest rewritten to bytes that are not UTF-8 (as a shell passes $'\xff...').
    payload = os.fsdecode(b"\xffrewritten!")
    div = start_divert(
        net,
        *FORWARD_5000,
        "--drop",
        "(ip and udp[8] = 0x44) or (ip6 and ip6[48] = 0x44)",
        "--drop",
        "(ip and udp[8] = 0x45) or (ip6 and ip6[48] = 0x45)",
        "--rewrite",
        f"payload={payload}",
    )
    sink = start_sink(net, 5000, 1.5)
    send(net, net.line.right_addr, 5000, "Dropme", "keep1", "Eagain", "keep2")
    send(net, net.line.right_addr6 or "", 5000, "Dsix", "keep6")
    got = sink_result(sink)
    _, err, rc = stop(div)
    assert rc == 0, err
    assert [d for d, _ in got] == [b"\xffrewritten!"] * 3
    assert "6 received, 3 accepted, 3 dropped, 3 rewritten" in err
    assert csum_errors(topology, net.right) == 0  # the receiver checked the new checksums
    assert ruleset(topology, net.router) == before


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
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen()
print("ready", flush=True)
for _ in range(int(sys.argv[3])):
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
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(sys.argv[3].encode() + b"\n")
data = b""
while chunk := c.recv(65536):
    data += chunk
print(len(data), data[:12].decode())
"""


def tcp_server(topology: Topology, net: Net, port: int, clients: int = 1, ipv6: bool = False) -> None:
    server = topology.spawn(
        net.right,
        sys.executable,
        "-c",
        TCP_SERVER,
        "::" if ipv6 else "0.0.0.0",
        str(port),
        str(clients),
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"


@pytest.mark.parametrize(
    ("ipv6", "gso"), [(False, False), (True, False), (False, True)], ids=["ipv4", "ipv6", "ipv4-gso"]
)
def test_tcp_connection_through_a_port_rewriting_divert(
    topology: Topology, tmp_path: Path, ipv6: bool, gso: bool
) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    family = "ip6" if ipv6 else "ip"
    extra = ["--gso"] if gso else []  # the queue flag on: GSO packets are handed over whole
    div = start_divert(
        net, "--rule", f"{family} and tcp", "--hook", "forward", "--exec", str(handler), *extra
    )
    host = (net.line.right_addr6 or "") if ipv6 else net.line.right_addr
    tcp_server(topology, net, 6000, ipv6=ipv6)
    result = topology.run(net.left, sys.executable, "-c", TCP_CLIENT, host, "5000", "x" * 100000, timeout=20)
    assert result.stdout.split() == [str(5 + 100001), "echo:xxxxxxx"]
    _, err, rc = stop(div)
    assert rc == 0, err
    assert "handler errors" not in err and "rewritten" in err
    assert ruleset(topology, net.router) == before


def test_tcp_payload_rewrites_touch_data_only_and_keep_lengths(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    tcp_server(topology, net, 5000, clients=2)
    # abc -> XYZ (one data segment; SYN, ACK and FIN are left alone): the server gets XYZ once.
    div = start_divert(
        net, "--rule", "tcp and dst port 5000", "--hook", "forward", "--rewrite", "payload=XYZ\n"
    )
    result = topology.run(net.left, sys.executable, "-c", TCP_CLIENT, net.line.right_addr, "5000", "abc")
    assert result.stdout.split() == ["9", "echo:XYZ"]
    _, err, rc = stop(div)
    assert rc == 0 and "1 rewritten" in err and "handler errors" not in err, err
    # Another length would shift the sequence numbers: refused, the data passes as it was.
    div = start_divert(
        net, "--rule", "tcp and dst port 5000", "--hook", "forward", "--rewrite", "payload=X\n"
    )
    result = topology.run(net.left, sys.executable, "-c", TCP_CLIENT, net.line.right_addr, "5000", "abc")
    assert result.stdout.split() == ["9", "echo:abc"]
    _, err, rc = stop(div)
    assert rc == 0 and "1 handler errors" in err and "sequence numbers" in err, err
    assert ruleset(topology, net.router) == before


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
    before = ruleset(topology, net.router)
    handler = tmp_path / "slow.py"
    handler.write_text(SLOW_FIRST)
    args = [*FORWARD_5000, "--maxlen", "1", "--exec", str(handler), "--timeout", "5"]
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
    assert ruleset(topology, net.router) == before


def test_bad_handlers_get_the_default_verdict_and_are_counted(topology: Topology, tmp_path: Path) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    handler = tmp_path / "bad.py"
    handler.write_text(
        textwrap.dedent("""
        def handle(pkt):
            if pkt.payload.endswith(b"raise"):
                raise RuntimeError("boom")
            return b"not an IP packet"
        """)
    )
    div = start_divert(net, *FORWARD_5000, "--exec", str(handler), "--default", "drop")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "raise", "garbage")
    got = sink_result(sink)
    _, err, rc = stop(div)
    assert rc == 0 and got == []
    assert "2 dropped" in err and "2 handler errors" in err
    assert "first handler error: RuntimeError: boom" in err
    assert ruleset(topology, net.router) == before


def test_bad_input(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    cli = [sys.executable, "-m", "sockscope", "divert"]
    for args, message in (
        (["--rule", "udp and dst port lots"], "--rule 'udp and dst port lots': "),
        (["--rule", "udp dport 5000 forward"], "write --rule 'udp and dst port 5000' --hook forward"),
        (["--rule", "udp", "--duration", "nan"], "argument --duration: want a positive number"),
        (["--rule", "udp", "--timeout", "-1"], "argument --timeout: want a positive number"),
        (["--rule", "udp", "-i", "eth0", "--hook", "output"], "-i (input interface) does not apply"),
    ):
        bad = topology.run(net.router, *cli, *args, check=False)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and message in bad.stderr, bad.stderr
    div = start_divert(net, *FORWARD_5000, "--queue", "9")
    with_rules = ruleset(topology, net.router)
    busy = topology.run(net.router, *cli, "--rule", "tcp", "--queue", "9", check=False)
    assert busy.returncode == 1 and "queue 9 is already bound by another process" in busy.stderr
    assert busy.stderr.count("\n") == 1
    unsupported = topology.run(net.router, *cli, "--rule", "tcp", "--conntrack", "--queue", "8", check=False)
    if unsupported.returncode:  # this kernel cannot attach conntrack state: the option is named
        assert unsupported.stderr.count("\n") == 1 and "--conntrack" in unsupported.stderr
    assert ruleset(topology, net.router) == with_rules  # nothing added, nothing removed
    stop(div)
    assert ruleset(topology, net.router) == before


def test_no_cap_net_admin_is_one_clear_line() -> None:
    # The child drops to nobody before binding: the kernel refuses the queue
    # configuration, so nothing reaches any firewall (queue 4321 is unused here).
    code, err = run_as_nobody(
        ["divert", "--rule", "udp and dst port 5000", "--queue", "4321"],
        preload=[
            "ctypes.util",  # libpcap compiles --rule before the queue is bound
            "sockscope.capture.bpf",
            "sockscope.divert.engine",
            "sockscope.divert.firewall",
            "sockscope.divert.session",
        ],
    )
    assert code == 1, err
    assert err == "sockscope divert: divert needs CAP_NET_ADMIN (run as root)\n"


def test_python_api_and_asyncio(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    script = textwrap.dedent("""
        import asyncio, sys, time
        import sockscope
        from sockscope.packets import UDP

        with sockscope.divert("udp and dst port 5000", hooks=["forward"], queue=1) as d:
            print("ready", flush=True)
            for pkt in d:
                if pkt[UDP].payload == b"drop":
                    pkt.drop()
                else:
                    pkt.mark = 7
                    pkt.accept()
                if pkt[UDP].payload == b"last":
                    break
            stats = d.stats()  # inside the block: the last verdicts counted
            print("sync", stats.accepted, stats.dropped, pkt.info.in_interface, flush=True)

        async def main():
            async with sockscope.divert("udp and dst port 5000", hooks=["forward"], queue=2) as d:
                print("ready", flush=True)
                async for pkt in d.packets():
                    data = pkt[UDP].payload
                    pkt.set_transport_payload(data.replace(b"a", b"A"))  # the UDP data only
                    pkt.accept()
                    if data == b"last":
                        break
                print("async", d.stats().modified, flush=True)

        asyncio.run(main())
    """)
    proc = topology.spawn(net.router, sys.executable, "-c", script)
    assert proc.stdout is not None
    for phase, texts, expect, summary in (
        ("sync", ["keep", "drop", "last"], [b"keep", b"last"], ["sync", "2", "1", "eth0"]),
        ("async", ["async1", "last"], [b"Async1", b"lAst"], ["async", "2"]),
    ):
        assert proc.stdout.readline().strip() == "ready"
        wait_for_tables(topology, net.router, proc)
        sink = start_sink(net, 5000, 1.0)
        send(net, net.line.right_addr, 5000, *texts, gap=0.05)
        assert [d for d, _ in sink_result(sink)] == expect, phase
        assert proc.stdout.readline().split() == summary
    proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert csum_errors(topology, net.right) == 0 and ruleset(topology, net.router) == before


def test_workers_share_a_queue_range_and_two_sigints_still_report(topology: Topology) -> None:
    net = build(topology)
    add_user_rules(topology, net.router)
    before = ruleset(topology, net.router)
    args = [*FORWARD_5000, "--queue-balance", "0:3", "--workers", "2", "--print"]
    div = start_divert(net, *args)
    queues = topology.run(net.router, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout.splitlines()
    assert sorted(int(line.split()[0]) for line in queues) == [0, 1, 2, 3]
    assert len({line.split()[1] for line in queues}) == 2  # two processes, two queues each
    sink = start_sink(net, 5000, 1.5)
    texts = [f"w{i}" for i in range(20)]
    send(net, net.line.right_addr, 5000, *texts)
    got = sink_result(sink)
    os.killpg(div.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    os.killpg(div.pid, signal.SIGINT)
    out, err = div.communicate(timeout=15)
    assert div.returncode == 0, err
    assert sorted(d for d, _ in got) == sorted(t.encode() for t in texts)
    assert len(out.splitlines()) == 20 and "20 received, 20 accepted" in err
    assert ruleset(topology, net.router) == before
    assert topology.run(net.router, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout == ""


def test_jsonl_uid_gid_and_a_cut_packet_is_not_rewritten(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.left)
    args = ["--rule", "udp and dst port 5000", "--hook", "output", "--uid-gid", "--jsonl", "--count", "1"]
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
    record = json.loads(out)  # --jsonl alone prints
    assert record["hook"] == "output" and record["out"] == "eth0" and record["in"] is None
    assert (record["uid"], record["gid"]) == (65534, 65534)
    assert record["length"] == 20 + 8 + 6 and record["verdict"] == "accept" and not record["rewritten"]
    assert "1 handler errors" in err and "cut at the copy range" in err
    assert ruleset(topology, net.left) == before


def test_interfaces_and_marks_select_packets(topology: Topology, tmp_path: Path) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    # r1's eth1 leads to right: -o eth1 sees the packets, -o 'eth0' (towards left) does not.
    seeing = start_divert(net, *FORWARD_5000, "-o", "eth1", "--print", "--queue", "1", wait_for="divert_1_")
    blind = start_divert(net, *FORWARD_5000, "-o", "eth0", "--print", "--queue", "2", wait_for="divert_2_")
    send(net, net.line.right_addr, 5000, "x")
    time.sleep(0.3)
    assert stop(seeing)[0].count("-> accept") == 1 and stop(blind)[0] == ""
    # repeat runs the chain again: the handler marks the packet, --mark '!1' lets it by.
    handler = tmp_path / "repeat.py"
    handler.write_text("def handle(pkt):\n    pkt.mark = 1\n    return 'repeat'\n")
    div = start_divert(net, *FORWARD_5000, "-i", "eth+", "--mark", "!1", "--exec", str(handler), "--print")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "again")
    got = sink_result(sink)
    out, err, rc = stop(div)
    assert rc == 0, err
    assert [d for d, _ in got] == [b"again"]
    assert out.count("-> repeat") == 1 and "1 repeated" in err  # the marked packet skipped the queue
    assert ruleset(topology, net.router) == before


def test_a_filter_too_long_for_the_kernel_runs_in_user_space(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    long_filter = " or ".join(f"(udp dst port {5000 + i} and len = {31 + i})" for i in range(20))
    div = start_divert(net, "--rule", long_filter, "--hook", "forward", "--print")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "abc", "abcd")  # IPv4 length 31: matches; 32: does not
    got = sink_result(sink)
    out, err, rc = stop(div)
    assert rc == 0, err
    assert sorted(d for d, _ in got) == [b"abc", b"abcd"]  # both delivered
    assert out.count("-> accept") == 1 and "length 3" in out  # only the match was handed out
    assert "note: --rule compiles to more BPF instructions than the kernel's bpf match takes" in err
    assert "1 received, 1 accepted, 0 dropped, 1 passed unseen" in err
    assert ruleset(topology, net.router) == before


OVERFLOW = r"""
import time
import sockscope

# A receive buffer of a few messages and a reader that sleeps: the kernel cannot
# deliver, drops (no fail-open) and counts; the engine sees ENOBUFS once it reads.
with sockscope.divert("udp and dst port 5000", hooks=["forward"], queue=4, rcvbuf=4096) as d:
    print("ready", flush=True)
    time.sleep(1.5)
    end = time.monotonic() + 0.5
    d.run(lambda pkt: "accept", until=lambda: time.monotonic() > end)
    kernel = d.stats()
print(kernel.received, kernel.enobufs, kernel.user_dropped, flush=True)
"""


def test_a_full_socket_buffer_is_counted_not_hidden(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    proc = topology.spawn(net.router, sys.executable, "-c", OVERFLOW)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    wait_for_tables(topology, net.router, proc)
    sink = start_sink(net, 5000, 2.5)
    send(net, net.line.right_addr, 5000, *(f"p{i}" for i in range(100)), gap=0.001)
    got = sink_result(sink)
    received, enobufs, user_dropped = (int(x) for x in proc.stdout.readline().split())
    proc.wait(timeout=10)
    assert enobufs >= 1 and user_dropped >= 1
    assert received == len(got) and received + user_dropped == 100  # every packet accounted for
    assert ruleset(topology, net.router) == before


RECEIVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5000))
s.settimeout(5)
print("ready", flush=True)
for _ in range(int(sys.argv[1])):
    data, (host, port) = s.recvfrom(65535)
    print(data.decode(), port, flush=True)
"""


SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 24929))  # 0x6161: a source port whose bytes read "aa"
for text in sys.argv[2:]:
    s.sendto(text.encode(), (sys.argv[1], 5000))
    time.sleep(0.05)
"""


def readme_divert_examples() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### `sockscope divert`") : readme.index("### Errors")]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_readme_python_example_changes_only_the_udp_data(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.right)
    first, rest = readme_divert_examples()
    compile(rest, "README.md", "exec")  # the asyncio and handler forms at least parse
    receiver = topology.spawn(net.right, sys.executable, "-c", RECEIVER, "2")
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    example = topology.spawn(net.right, sys.executable, "-c", first)
    wait_for_tables(topology, net.right, example)
    topology.run(net.left, sys.executable, "-c", SENDER, net.line.right_addr, "xdrop", "banana", "stop")
    out, err = example.communicate(timeout=10)
    assert example.returncode == 0, err
    stats = ast.literal_eval(out)  # the example prints d.stats().to_dict()
    assert (stats["received"], stats["accepted"], stats["dropped"]) == (3, 2, 1)
    received, _ = receiver.communicate(timeout=10)
    assert received.splitlines() == ["bbnbnb 24929", "stop 24929"]  # the port's "aa" untouched
    assert csum_errors(topology, net.right) == 0
    assert ruleset(topology, net.right) == before
