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
