"""`sockscope divert` on real traffic: left - r1 - right, the divert in the router on
the forward hook (or in a host), UDP and TCP, IPv4 and IPv6.

Every test that runs a divert compares the namespace's whole ruleset (``nft
--stateless list ruleset``, iptables-nft's rules included) before and after, with an
administrator's own rules in place where it matters: the firewall must be exactly as
the divert found it, however the run ended.
"""

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
    Net,
    add_user_rules,
    build,
    csum_errors,
    divert_tables,
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

FORWARD_5000 = ["--rule", "udp and dst port 5000", "--hook", "forward"]


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


def test_an_empty_ruleset_stays_empty(topology: Topology) -> None:
    # The reported case: no `table ip filter` (nor anything else) may remain.
    net = build(topology)
    assert ruleset(topology, net.right) == ""
    div = start_divert(net, "--rule", "udp and dst port 5000", ns=net.right)
    assert len(divert_tables(topology, net.right)) == 2  # ip and ip6, nothing else
    _, err, rc = stop(div, signal.SIGINT)
    assert rc == 0, err
    assert ruleset(topology, net.right) == ""


ENDINGS = ["sigint", "sigterm", "sighup", "two-sigints", "count", "duration", "sigkill"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_the_ruleset_is_as_it_was_however_the_run_ends(topology: Topology, ending: str) -> None:
    net = build(topology)
    add_user_rules(
        topology,
        net.router,
        ["-A", "FORWARD", "-p", "udp", "--dport", "5001", "-j", "DROP"],
        ["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    )
    before = ruleset(topology, net.router)
    extra = {"count": ["--count", "2"], "duration": ["--duration", "1.5"]}.get(ending, [])
    div = start_divert(net, *FORWARD_5000, *extra)
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "a", "b")
    assert sorted(d for d, _ in sink_result(sink)) == [b"a", b"b"]
    if ending in ("count", "duration"):
        _, err = div.communicate(timeout=10)
    elif ending == "sigkill":
        os.killpg(div.pid, signal.SIGKILL)
        div.wait()
        err = ""
    else:
        signum = {"sigterm": signal.SIGTERM, "sighup": signal.SIGHUP}.get(ending, signal.SIGINT)
        div.send_signal(signum)
        if ending == "two-sigints":
            div.send_signal(signal.SIGINT)
        _, err = div.communicate(timeout=10)
    if ending == "sigkill":
        assert div.returncode == -signal.SIGKILL  # and the kernel removed its tables with it
    else:
        assert div.returncode == 0, err
        assert "2 received, 2 accepted, 0 dropped" in err
    assert ruleset(topology, net.router) == before
    sink = start_sink(net, 5000, 0.8)
    send(net, net.line.right_addr, 5000, "after")
    assert [d for d, _ in sink_result(sink)] == [b"after"]  # nothing black-holed


def test_the_hosts_own_drop_rules_still_apply_after_an_accept(topology: Topology) -> None:
    # The divert sits before the filter chains: what it accepts, the host's rules judge.
    net = build(topology)
    drop_left = ["-A", "INPUT", "-s", net.line.left_addr, "-p", "udp", "--dport", "5000", "-j", "DROP"]
    add_user_rules(topology, net.right, drop_left)
    before = ruleset(topology, net.right)
    div = start_divert(net, "--rule", "udp and dst port 5000", "--print", ns=net.right)
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "v4-blocked")
    send(net, net.line.right_addr6 or "", 5000, "v6-passes")
    got = sink_result(sink)
    out, err, rc = stop(div)
    assert rc == 0, err
    assert [d for d, _ in got] == [b"v6-passes"]
    assert out.count("-> accept") == 2  # both diverted and accepted; the host dropped the IPv4 one
    assert ruleset(topology, net.right) == before


def test_two_diverts_on_the_same_packets_both_see_them_newest_first(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    # The older one drops what starts with "B"; the newer rewrites every payload to "B".
    older = start_divert(net, *FORWARD_5000, "--queue", "1", "--drop", "udp[8] = 0x42", wait_for="divert_1_")
    newer = start_divert(net, *FORWARD_5000, "--queue", "2", "--rewrite", "payload=B", wait_for="divert_2_")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "x")
    assert sink_result(sink) == []  # rewritten by the newer, then dropped by the older
    _, newer_err, rc = stop(newer)
    assert rc == 0 and "1 received, 1 accepted, 0 dropped, 1 rewritten" in newer_err
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "y")
    assert [d for d, _ in sink_result(sink)] == [b"y"]  # the older alone: passes
    _, older_err, rc = stop(older)
    assert rc == 0 and "2 received, 1 accepted, 1 dropped" in older_err
    assert ruleset(topology, net.router) == before


def test_a_flushed_ruleset_leaves_the_divert_working_and_removable(topology: Topology) -> None:
    net = build(topology)
    add_user_rules(topology, net.router, ["-A", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "DROP"])
    div = start_divert(net, *FORWARD_5000, "--print")
    topology.run(net.router, "iptables", "-F")
    topology.run(net.router, "nft", "flush", "ruleset")  # passes our tables by: the process owns them
    assert len(divert_tables(topology, net.router)) == 2
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "still")
    assert [d for d, _ in sink_result(sink)] == [b"still"]
    out, err, rc = stop(div)
    assert rc == 0, err
    assert out.count("-> accept") == 1
    assert ruleset(topology, net.router) == ""  # the user's flush, and nothing of ours


UNOWNED = r"""
import os, sys
from sockscope.divert.firewall import install
from sockscope.divert.rule import compile_rule

# Tables as a kernel without owner tables gets them: plain, named after this process.
steering = install(compile_rule("udp and dst port 5000", ["forward"]), [0], bypass=True, owner=False)
print(" ".join(steering.tables), flush=True)
if sys.argv[1] == "remove":
    input()  # the test deletes one table meanwhile
    steering.remove()
    print("removed", flush=True)
else:
    input()  # killed here
"""


def test_tables_without_an_owner_are_removed_part_by_part_and_after_a_kill(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    proc = topology.spawn(net.router, sys.executable, "-c", UNOWNED, "remove", stdin=-1)
    assert proc.stdout is not None and proc.stdin is not None
    words = proc.stdout.readline().split()  # "ip NAME ip6 NAME"
    assert words[0::2] == ["ip", "ip6"]
    topology.run(net.router, "nft", "delete", "table", *words[:2])  # the user removed one part
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "removed"  # the other part went, no error
    proc.wait(timeout=10)
    assert ruleset(topology, net.router) == before
    # Killed: the tables stay (no owner) until the next run or --cleanup removes them.
    proc = topology.spawn(net.router, sys.executable, "-c", UNOWNED, "kill", stdin=-1)
    assert proc.stdout is not None
    names = proc.stdout.readline().split()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(divert_tables(topology, net.router)) == 2
    cleanup = topology.run(net.router, sys.executable, "-m", "sockscope", "divert", "--cleanup")
    assert sorted(cleanup.stdout.splitlines()) == sorted(
        f"removed {family} table {name}" for family, name in zip(names[::2], names[1::2], strict=True)
    )
    assert ruleset(topology, net.router) == before


def test_cleanup_removes_old_versions_iptables_leftovers_only(topology: Topology) -> None:
    net = build(topology)
    add_user_rules(topology, net.router, ["-A", "FORWARD", "-p", "tcp", "--dport", "9", "-j", "DROP"])
    before = ruleset(topology, net.router)
    comment = '-m comment --comment "sockscope divert pid=999999 start=1"'
    legacy = "\n".join(
        [
            "*filter",
            ":SOCKSCOPE-DIVERT-0-FWD - [0:0]",
            f"-A SOCKSCOPE-DIVERT-0-FWD -p udp -m udp --dport 5000 {comment} -j NFQUEUE --queue-num 0",
            f"-I FORWARD 1 {comment} -j SOCKSCOPE-DIVERT-0-FWD",
            "COMMIT",
            "",
        ]
    )
    topology.run(net.router, "iptables-restore", "--noflush", input=legacy)
    cleanup = topology.run(net.router, sys.executable, "-m", "sockscope", "divert", "--cleanup")
    assert cleanup.stdout == "removed ip filter SOCKSCOPE-DIVERT-0-FWD\n"
    assert ruleset(topology, net.router) == before


def test_cleanup_without_privilege_says_so_and_fails() -> None:
    code, err = run_as_nobody(
        ["divert", "--cleanup"],
        preload=["sockscope.divert.firewall", "sockscope.divert.legacy", "sockscope.netlink.nftables"],
    )
    assert code == 1
    assert err == "sockscope divert: divert needs CAP_NET_ADMIN to change the firewall (run as root)\n"


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


def test_without_bypass_a_killed_divert_still_leaves_nothing(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    div = start_divert(net, *FORWARD_5000, "--no-bypass")
    os.killpg(div.pid, signal.SIGKILL)
    div.wait()
    assert ruleset(topology, net.router) == before  # the kernel removed the owned tables
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


def test_a_stalled_handler_does_not_black_hole_traffic_and_print_shows_it(
    topology: Topology, tmp_path: Path
) -> None:
    net = build(topology)
    handler = tmp_path / "stuck.py"
    handler.write_text("import time\ndef handle(pkt):\n    time.sleep(30)\n")
    div = start_divert(net, *FORWARD_5000, "--exec", str(handler), "--timeout", "0.3", "--print")
    sink = start_sink(net, 5000, 2.5)
    send(net, net.line.right_addr, 5000, *(f"p{i}" for i in range(5)), gap=0.05)
    got = sorted(d for d, _ in sink_result(sink))
    assert got == sorted(f"p{i}".encode() for i in range(5))
    started = time.monotonic()
    out, err, rc = stop(div)  # SIGTERM interrupts the sleeping handler
    assert rc == 0, err
    assert time.monotonic() - started < 2
    assert out.count("-> accept") == 5  # the default verdicts are printed too
    assert "5 received, 5 accepted, 0 dropped, 5 given the default verdict" in err


STUBBORN = """
import time
def handle(pkt):
    while True:
        try:
            time.sleep(30)
        except BaseException:
            pass  # refuses to be interrupted
"""


def test_sigterm_ends_a_divert_whose_handler_will_not_stop_in_bounded_time(
    topology: Topology, tmp_path: Path
) -> None:
    net = build(topology)
    add_user_rules(topology, net.router)
    before = ruleset(topology, net.router)
    handler = tmp_path / "stubborn.py"
    handler.write_text(STUBBORN)
    div = start_divert(net, *FORWARD_5000, "--exec", str(handler), "--timeout", "30")
    sink = start_sink(net, 5000, 6.0)
    send(net, net.line.right_addr, 5000, "p0", "p1", "p2")
    time.sleep(0.3)  # the handler holds p0; p1, p2 wait in the queue (the timeout is long)
    started = time.monotonic()
    div.send_signal(signal.SIGTERM)
    div.send_signal(signal.SIGTERM)  # a second one changes nothing
    _, err = div.communicate(timeout=10)
    took = time.monotonic() - started
    assert div.returncode == 1 and 2.5 < took < 5, (took, err)
    assert "did not return within 3 s of the signal" in err and "3 received" in err
    assert ruleset(topology, net.router) == before
    assert sorted(d for d, _ in sink_result(sink)) == [b"p0", b"p1", b"p2"]  # default: accept


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
    div = start_divert(net, *FORWARD_5000, "--exec", str(handler), "--default", "drop")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "raise", "garbage")
    got = sink_result(sink)
    _, err, rc = stop(div)
    assert rc == 0 and got == []
    assert "2 dropped" in err and "2 handler errors" in err
    assert "first handler error: RuntimeError: boom" in err


def test_a_handler_that_exits_ends_the_divert_with_its_status(topology: Topology, tmp_path: Path) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    handler = tmp_path / "exits.py"
    handler.write_text("import sys\ndef handle(pkt):\n    sys.exit(3)\n")
    div = start_divert(net, *FORWARD_5000, "--exec", str(handler), "--print")
    sink = start_sink(net, 5000, 1.0)
    send(net, net.line.right_addr, 5000, "last")
    out, err = div.communicate(timeout=10)
    assert div.returncode == 3
    assert "1 received, 1 accepted" in err and "the handler exited with status 3" in err
    assert out.count("-> accept") == 1  # its packet got the default verdict
    assert [d for d, _ in sink_result(sink)] == [b"last"]
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


def test_output_into_a_closed_pipe_or_a_full_disk(topology: Topology) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
    with open("/dev/full", "w") as full:
        div = start_divert(net, *FORWARD_5000, "--print", stdout=full)
        send(net, net.line.right_addr, 5000, "x")
        _, err = div.communicate(timeout=10)  # stops by itself at the write error
    assert div.returncode == 1 and err.count("\n") == 2, err  # the counters, then the error
    assert "1 received" in err and err.endswith("sockscope divert: write error: No space left on device\n")
    read_end, write_end = os.pipe()
    div = start_divert(net, *FORWARD_5000, "--print", stdout=write_end)
    os.close(write_end)
    os.close(read_end)  # the reader went away (| head)
    send(net, net.line.right_addr, 5000, "x")
    _, err = div.communicate(timeout=10)
    assert div.returncode == 0 and "1 received" in err and err.count("\n") == 1, err
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


LIBRARY = textwrap.dedent("""
    import os, sys, time
    import sockscope

    with sockscope.divert("udp and dst port 5000", hooks=["forward"]) as d:
        if sys.argv[1] == "fork" and os.fork() == 0:
            time.sleep(30)  # a child that outlives the divert: it must not keep it alive
            os._exit(0)
        print("ready", flush=True)
        for pkt in d:
            pkt.accept()
""")


@pytest.mark.parametrize("how", ["sigterm", "sigkill", "fork"])
def test_a_library_program_ended_the_ordinary_way_leaves_no_black_hole(topology: Topology, how: str) -> None:
    net = build(topology)
    add_user_rules(topology, net.router)
    before = ruleset(topology, net.router)
    proc = topology.spawn(net.router, sys.executable, "-c", LIBRARY, how)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    if how == "sigterm":
        proc.terminate()  # no handler installed: Python's default, the process just ends
    else:
        proc.kill()  # with "fork" its child lives on, holding copies of nothing of ours
    proc.wait(timeout=10)
    assert ruleset(topology, net.router) == before
    sink = start_sink(net, 5000, 0.8)
    send(net, net.line.right_addr, 5000, "passes")
    assert [d for d, _ in sink_result(sink)] == [b"passes"]


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


@pytest.mark.parametrize("handler", ["stubborn", "exits"])
def test_workers_end_in_bounded_time_whatever_their_handler_does(
    topology: Topology, tmp_path: Path, handler: str
) -> None:
    net = build(topology)
    add_user_rules(topology, net.router)
    before = ruleset(topology, net.router)
    path = tmp_path / "handler.py"
    path.write_text(STUBBORN if handler == "stubborn" else "import sys\ndef handle(pkt):\n    sys.exit(4)\n")
    args = [*FORWARD_5000, "--queue-balance", "0:1", "--workers", "2", "--exec", str(path)]
    div = start_divert(net, *args)
    send(net, net.line.right_addr, 5000, "p0")
    time.sleep(0.3)
    started = time.monotonic()
    if handler == "stubborn":
        div.send_signal(signal.SIGTERM)
    _, err = div.communicate(timeout=15)
    took = time.monotonic() - started
    if handler == "stubborn":  # the worker holding p0 ignores being told to stop: killed
        assert div.returncode == 1 and took < 5, (took, err)
        assert "1 worker(s) did not stop within 3 s and were killed" in err
    else:
        assert div.returncode == 4 and "the handler exited with status 4" in err, err
        assert "1 received, 1 accepted" in err
    assert ruleset(topology, net.router) == before
    assert topology.run(net.router, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout == ""
