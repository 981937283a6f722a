"""The inventory commands (ls, watch, kill, ifaces) on input a new user gives them:
files that are not namespaces, intervals no timer can wait, names no one should
have chosen. Each case is one line on stderr and a meaningful status, never a
traceback (issue #12)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

CLI = [sys.executable, "-m", "sockscope"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", [["ls"], ["watch"], ["kill", "sport", "=", ":1"], ["ifaces"]])
@pytest.mark.parametrize("path", ["/etc/passwd", "/dev/null"])
def test_a_file_that_is_not_a_namespace_is_a_usage_error(command: list[str], path: str) -> None:
    result = run_cli(command[0], "-N", path, *command[1:])
    assert result.returncode == 2
    assert one_line(result.stderr) == f"sockscope {command[0]}: {path} is not a network namespace"


@pytest.mark.parametrize("command", ["watch", "ifaces"])
@pytest.mark.parametrize("value", ["inf", "1e308", "nan", "0", "-1"])
def test_intervals_no_timer_can_wait_are_usage_errors(command: str, value: str) -> None:
    result = run_cli(command, f"--interval={value}", "--count=1")
    assert result.returncode == 2
    assert "--interval" in one_line(result.stderr)


def test_api_watch_refuses_an_infinite_interval() -> None:
    import sockscope

    with pytest.raises(sockscope.UsageError, match="at most 86400"):
        sockscope.watch(interval=float("inf"))


def test_procfs_reads_unix_paths_with_newlines() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "a\nb.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
            s.listen()
            result = run_cli("ls", "--procfs", "-x", "--json", f"--pid={os.getpid()}")
            assert result.returncode == 0, result.stderr
            ino = os.fstat(s.fileno()).st_ino
            (item,) = [i for i in json.loads(result.stdout) if i["inode"] == ino]
            assert item["local"]["path"] == path


def test_listening_is_ss_l_every_socket_not_connected() -> None:
    # ss -l lists bound UDP, raw, packet and unix datagram sockets (UNCONN) besides listeners.
    tmp = tempfile.mkdtemp()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    packet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    lst = socket.socket()
    made = [udp, raw, packet, dgram, lst]
    try:
        udp.bind(("127.0.0.1", 0))
        dgram.bind(os.path.join(tmp, "d.sock"))
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        cli = socket.create_connection(lst.getsockname())
        srv, _ = lst.accept()
        made += [cli, srv]
        inodes = {os.fstat(s.fileno()).st_ino: s for s in made}
        import sockscope

        listed = {s.inode for s in sockscope.sockets(listening=True, pid=os.getpid())} & set(inodes)
        assert listed == {os.fstat(s.fileno()).st_ino for s in (udp, raw, packet, dgram, lst)}
        connected = {s.inode for s in sockscope.sockets(listening=False, pid=os.getpid())}
        assert {os.fstat(s.fileno()).st_ino for s in (cli, srv)} <= connected
        assert not connected & listed
        port = udp.getsockname()[1]
        result = run_cli("ls", "-lun", f"sport = :{port}")
        assert result.returncode == 0 and f"127.0.0.1:{port}" in result.stdout, result
        result = run_cli("kill", "-l", "-u", "--dry-run", f"sport = :{port}")
        assert result.returncode == 0 and result.stdout.startswith("would close udp UNCONN"), result
    finally:
        for s in made:
            s.close()
        os.unlink(os.path.join(tmp, "d.sock"))
        os.rmdir(tmp)


def time_wait_port() -> int:
    """A TIME_WAIT connection on loopback: the client closes first. Returns the server port."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        cli = socket.create_connection(lst.getsockname())
        srv, _ = lst.accept()
        cli.close()
        srv.recv(1)  # the client's FIN
        srv.close()
        return int(lst.getsockname()[1])


def test_kill_destroys_time_wait_sockets_as_ss_k_does() -> None:
    import sockscope

    port = time_wait_port()
    flt = f"state time-wait and dport = :{port}"
    assert len(sockscope.sockets("tcp", filter=flt)) == 1
    result = run_cli("kill", "-4", flt)
    assert result.returncode == 0, result
    assert result.stdout.startswith("closed tcp TIME_WAIT 127.0.0.1:")
    assert sockscope.sockets("tcp", filter=flt) == []


def test_kill_by_family() -> None:
    with socket.socket(socket.AF_INET6) as lst:
        lst.bind(("::1", 0))
        lst.listen()
        port = lst.getsockname()[1]
        assert run_cli("kill", "-4", "--dry-run", f"sport = :{port}").returncode == 1
        result = run_cli("kill", "-6", "--dry-run", f"sport = :{port}")
        assert result.returncode == 0 and f"[::1]:{port}" in result.stdout
