"""The inventory against live sockets on loopback: owners, peers, output formats."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

import privileges
import sockscope
from sockscope.inventory.model import InetAddress, UnixAddress

CLI = [sys.executable, "-m", "sockscope"]


def run_cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=check)


def inode(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    try:
        yield lst, cli, srv
    finally:
        for s in (cli, srv, lst):
            s.close()


def test_tcp_sockets_with_owners_and_fds(tcp_pair: tuple[socket.socket, ...]) -> None:
    lst, cli, srv = tcp_pair
    port = lst.getsockname()[1]
    socks = sockscope.sockets("tcp", filter=f"sport = :{port} or dport = :{port}")
    by_ino = {s.inode: s for s in socks}
    assert set(by_ino) == {inode(lst), inode(cli), inode(srv)}
    for sock in (lst, cli, srv):
        found = by_ino[inode(sock)]
        assert [(o.pid, o.fd) for o in found.owners] == [(os.getpid(), sock.fileno())]
        assert found.owners[0].user == "root" and found.owners[0].command
    assert by_ino[inode(lst)].state == "LISTEN" and by_ino[inode(lst)].remote is None
    assert by_ino[inode(cli)].remote == InetAddress("127.0.0.1", port)
    assert by_ino[inode(srv)].local == InetAddress("127.0.0.1", port)


def test_every_holder_of_a_shared_socket_is_listed(tcp_pair: tuple[socket.socket, ...]) -> None:
    lst, cli, _srv = tcp_pair
    # A child inherits the client socket: both processes hold it.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             pass_fds=[cli.fileno()])
    try:
        time.sleep(0.2)
        port = lst.getsockname()[1]
        (found,) = sockscope.sockets("tcp", filter=f"dport = :{port}")
        assert {o.pid for o in found.owners} == {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()


def test_unix_peer_names_the_process_at_the_other_end() -> None:
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                             pass_fds=[theirs.fileno()])
    theirs.close()
    try:
        time.sleep(0.2)
        socks = {s.inode: s for s in sockscope.sockets("unix")}
        me = socks[inode(mine)]
        assert me.type == "seqpacket" and me.state == "ESTABLISHED"
        assert me.peer_inode is not None and me.peer_owners is not None
        assert [o.pid for o in me.peer_owners] == [child.pid]
        assert [o.pid for o in socks[me.peer_inode].owners] == [child.pid]
    finally:
        child.kill()
        child.wait()
        mine.close()


def test_every_kind_in_json_has_the_documented_keys() -> None:
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "s.sock")
    made = [
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM),
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)),
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    ]
    try:
        made[0].bind(("127.0.0.1", 0))
        made[1].bind(("::1", 0))
        made[1].listen()
        made[2].bind(path)
        made[2].listen()
        made[3].bind("\0ssc-json-test")
        made[5].bind((0, 0))
        result = run_cli("ls", "--json", f"--pid={os.getpid()}")
        assert result.returncode == 0, result.stderr
        items = json.loads(result.stdout)
        by_ino = {item["inode"]: item for item in items}
        expect = [
            ("inet", "udp", "dgram", "UNCONN"), ("inet6", "tcp", "stream", "LISTEN"),
            ("unix", "unix", "stream", "LISTEN"), ("unix", "unix", "dgram", "UNCONN"),
            ("packet", "packet", "raw", "UNCONN"), ("netlink", "netlink", "raw", "UNCONN"),
            ("inet", "raw", "raw", "UNCONN"),
        ]
        for sock, (family, proto, stype, state) in zip(made, expect, strict=True):
            item = by_ino[inode(sock)]
            assert (item["family"], item["proto"], item["type"], item["state"]) == (
                family, proto, stype, state)
            for key in ("netns", "local", "remote", "recv_q", "send_q", "uid", "owners"):
                assert key in item
            assert item["owners"] == [{"pid": os.getpid(), "command": item["owners"][0]["command"],
                                       "fd": sock.fileno(), "user": "root", "uid": 0}]
        assert by_ino[inode(made[0])]["local"] == {"address": "127.0.0.1",
                                                   "port": made[0].getsockname()[1]}
        assert by_ino[inode(made[0])]["remote"] is None
        assert by_ino[inode(made[2])]["local"] == {"path": path, "abstract": False}
        assert by_ino[inode(made[3])]["local"] == {"path": "ssc-json-test", "abstract": True}
        assert by_ino[inode(made[6])]["protocol_number"] == socket.IPPROTO_ICMP
    finally:
        for s in made:
            s.close()
        os.unlink(path)
        os.rmdir(tmp)


def test_jsonl_and_csv(tcp_pair: tuple[socket.socket, ...]) -> None:
    lst = tcp_pair[0]
    port = lst.getsockname()[1]
    lines = run_cli("ls", "-t", "--jsonl", f"sport = :{port}", check=True).stdout.splitlines()
    objs = [json.loads(line) for line in lines]
    assert {o["state"] for o in objs} == {"LISTEN", "ESTABLISHED"}
    rows = list(csv.DictReader(io.StringIO(run_cli("ls", "-t", "--csv", f"sport = :{port}",
                                                   check=True).stdout)))
    assert {r["state"] for r in rows} == {"LISTEN", "ESTABLISHED"}
    assert all(r["local_port"] == str(port) for r in rows)
    assert all(r["owners"].endswith(f"/{os.getpid()}/{lst.fileno()}") or r["state"] != "LISTEN"
               for r in rows)


def test_table_shows_owner_and_info_lines(tcp_pair: tuple[socket.socket, ...]) -> None:
    lst, cli, _srv = tcp_pair
    cli.sendall(b"hello")
    port = lst.getsockname()[1]
    out = run_cli("ls", "-t", "-i", "-m", "-e", f"dport = :{port}", check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["Netid", "State"]
    assert f"[{os.getpid()}]:{cli.fileno()}" in lines[1] and "ESTABLISHED" in lines[1]
    assert "rtt:" in lines[2] and "cwnd:" in lines[2] and "skmem:(" in lines[2]


def test_info_json_has_tcp_info(tcp_pair: tuple[socket.socket, ...]) -> None:
    lst, cli, srv = tcp_pair
    cli.sendall(b"x" * 5000)
    srv.recv(5000)
    (item,) = json.loads(run_cli("ls", "-t", "-i", "-m", "--json",
                                 f"dport = :{lst.getsockname()[1]}", check=True).stdout)
    info = item["tcp_info"]
    assert info["bytes_acked"] >= 5000 and info["snd_cwnd"] > 0 and info["congestion"]
    assert item["memory"]["sndbuf"] > 0


def test_bad_filter_is_one_line_and_status_2() -> None:
    result = run_cli("ls", "sport", "=", "nonsense-port-name")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "nonsense-port-name" in result.stderr


def test_unknown_namespace_is_status_2() -> None:
    result = run_cli("ls", "--netns", "ssc-no-such-namespace")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sockscope ls: network namespace 'ssc-no-such-namespace' not found")


def test_unknown_user_is_status_2() -> None:
    result = run_cli("ls", "--user", "ssc-no-such-user")
    assert result.returncode == 2 and "ssc-no-such-user" in result.stderr


def test_pid_filter_keeps_only_that_process(tcp_pair: tuple[socket.socket, ...]) -> None:
    socks = sockscope.sockets(pid=os.getpid())
    assert socks and all(any(o.pid == os.getpid() for o in s.owners) for s in socks)
    assert inode(tcp_pair[0]) in {s.inode for s in socks}


def test_command_filter(tcp_pair: tuple[socket.socket, ...]) -> None:
    with open(f"/proc/{os.getpid()}/comm") as f:
        comm = f.read().strip()
    socks = sockscope.sockets("tcp", command=comm)
    assert inode(tcp_pair[1]) in {s.inode for s in socks}
    assert not sockscope.sockets("tcp", command="ssc-nothing-named-so")


def test_procfs_fallback_agrees_with_sock_diag(tcp_pair: tuple[socket.socket, ...]) -> None:
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::1", 0))
    try:
        mine = {inode(s) for s in (*tcp_pair, udp)}
        diag = {s.inode: s for s in sockscope.sockets(["tcp", "udp"]) if s.inode in mine}
        proc = {s.inode: s for s in sockscope.sockets(["tcp", "udp"], procfs=True)
                if s.inode in mine}
        assert set(diag) == set(proc) == mine
        for ino in mine:
            a, b = diag[ino], proc[ino]
            assert (a.family, a.proto, a.state, a.local, a.remote) == (
                b.family, b.proto, b.state, b.local, b.remote)
            assert a.owners == b.owners and b.source == "procfs"
    finally:
        udp.close()


def test_raw_sockets_are_listed() -> None:
    raw = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        (found,) = [s for s in sockscope.sockets("raw") if s.inode == inode(raw)]
        assert found.family == "inet6" and found.protocol_number == socket.IPPROTO_ICMPV6
        assert found.owners[0].pid == os.getpid()
    finally:
        raw.close()


def test_ls_x_marks_socket_files_that_are_gone() -> None:
    tmp = tempfile.mkdtemp()
    here, gone = os.path.join(tmp, "here.sock"), os.path.join(tmp, "gone.sock")
    a, b = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        a.bind(here)
        b.bind(gone)
        os.unlink(gone)
        socks = {s.inode: s for s in sockscope.sockets("unix", check_paths=True)}
        assert socks[inode(a)].local == UnixAddress(here, False, True)
        assert socks[inode(b)].local == UnixAddress(gone, False, False)
        out = run_cli("ls", "-x", f"--pid={os.getpid()}", check=True).stdout
        assert f"{gone} (gone)" in out and f"{here} (gone)" not in out
    finally:
        a.close()
        b.close()
        os.unlink(here)
        os.rmdir(tmp)


def test_stale_lists_only_files_without_a_socket() -> None:
    tmp = tempfile.mkdtemp()
    live, dead = os.path.join(tmp, "live.sock"), os.path.join(tmp, "dead.sock")
    a, b = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    try:
        a.bind(live)
        a.listen()
        b.bind(dead)
        b.close()  # the file stays behind: stale
        result = run_cli("ls", "--stale", tmp, "--json", check=True)
        assert [f["path"] for f in json.loads(result.stdout)] == [dead]
        missing = run_cli("ls", "--stale", os.path.join(tmp, "nope"))
        assert missing.returncode == 2 and "not a directory" in missing.stderr
    finally:
        a.close()
        for p in (live, dead):
            os.unlink(p)
        os.rmdir(tmp)


def test_processes_exiting_during_scans_are_skipped() -> None:
    # Short-lived processes come and go while we scan /proc: no error, ever.
    procs = [subprocess.Popen(["sleep", f"0.0{i % 10}"]) for i in range(40)]
    try:
        for _ in range(5):
            sockscope.sockets("unix")
    finally:
        for p in procs:
            p.wait()


def run_as_nobody(argv: list[str]) -> tuple[int, str]:
    return privileges.run_as_nobody(argv, preload=["sockscope.inventory.filter"])


def test_owners_need_root_note_for_unprivileged_user() -> None:
    # The listing works, and one line on stderr explains that other users'
    # owners need root.
    code, err = run_as_nobody(["ls", "-t"])
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "need root" in lines[0]


def test_all_netns_without_root_skips_what_it_cannot_enter(topology: Any) -> None:
    topology.add_netns("a")
    code, err = run_as_nobody(["ls", "-t", "--all-netns"])
    assert code == 0, err
    assert "network namespaces need root to enter and were skipped" in err
    assert "Traceback" not in err


def test_plain_ls_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from sockscope.cli.main import main\n"
        "import io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['ls', '-t'])\n"
        "heavy = {'rich', 'textual', 'scapy', 'json', 'csv', 'ctypes', 'asyncio', 'psutil'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_version_and_help() -> None:
    assert run_cli("--version", check=True).stdout.strip() == f"sockscope {sockscope.__version__}"
    assert "ls" in run_cli("--help", check=True).stdout
    bad = run_cli("frobnicate")
    assert bad.returncode == 2 and "unknown command" in bad.stderr
