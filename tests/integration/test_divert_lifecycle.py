"""How a divert run ends, and what it leaves: the namespace's whole ruleset (``nft
--stateless list ruleset``) compared before and after every way a run can end —
signals, repeated signals, --count, --duration, SIGKILL, a handler's sys.exit, a
stuck handler, a flushed ruleset, a library program ended the ordinary way — most
with an administrator's own nft and iptables rules in place, and the traffic passing
afterwards (never a black hole)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
from divert_helpers import (
    FORWARD_5000,
    add_user_rules,
    build,
    divert_tables,
    ruleset,
    send,
    sink_result,
    start_divert,
    start_sink,
    stop,
)

from privileges import run_as_nobody
from topology import Topology

pytestmark = pytest.mark.needs_root


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


def test_a_stalled_handler_does_not_black_hole_traffic_and_print_shows_it(
    topology: Topology, tmp_path: Path
) -> None:
    net = build(topology)
    before = ruleset(topology, net.router)
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
    assert ruleset(topology, net.router) == before


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
