"""``connect`` and ``listen`` as netcat: every kind of standard input, each direction
ending on its own end of file, nc's options, and the shell's conditions (closed
descriptors, /dev/full, signals, no privileges). The side-by-side comparison with
OpenBSD nc itself is tests/oracle/test_nc.py."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import stdin_kinds
from ports import free_port
from privileges import as_nobody

CLI = [sys.executable, "-m", "sockscope"]
T = TypeVar("T")
STDIN_KINDS = stdin_kinds.KINDS


def read_all(conn: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the peer's end of file; b"...<timeout>" if it never comes."""
    conn.settimeout(timeout)
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except TimeoutError:
        return got + b"<timeout>"
    return got


class Peer:
    """A TCP peer on 127.0.0.1 in a thread: ``serve(conn)`` runs on the first
    connection (or on an outgoing one with `dial`); `result()` is its return value."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self._pool = concurrent.futures.ThreadPoolExecutor(1)
        self._future: concurrent.futures.Future[Any] | None = None

    def serve(self, script: Callable[[socket.socket], T]) -> Peer:
        def run() -> T:
            conn, _ = self.listener.accept()
            with conn:
                return script(conn)

        self._future = self._pool.submit(run)
        return self

    def result(self, timeout: float = 15) -> Any:
        assert self._future is not None
        return self._future.result(timeout)

    def close(self) -> None:
        self.listener.close()
        self._pool.shutdown(wait=True)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    try:
        yield p
    finally:
        p.close()


def spawn(args: list[str], stdin_kind: str, data: bytes, tmp: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    return stdin_kinds.popen([*CLI, *args], stdin_kind, data, tmp / "input", **kwargs)


def sent_by_kind(kind: str, data: bytes) -> bytes:
    return data if kind in ("pipe", "file") else b""


@pytest.mark.parametrize("kind", STDIN_KINDS)
def test_connect_with_every_kind_of_stdin(peer: Peer, tmp_path: Path, kind: str) -> None:
    """nc's way: the input is sent, its end is not passed on (no -N), and the relay
    goes on reading until the peer closes, also after the input ended."""
    def server(conn: socket.socket) -> bytes:
        conn.sendall(b"greeting\n")
        got = read_all(conn, timeout=0.8)  # no end of file without -N: times out
        conn.sendall(b"late\n")
        return got

    peer.serve(server)
    proc = spawn(["connect", f"tcp:127.0.0.1:{peer.port}"], kind, b"upload\n", tmp_path)
    out, err = proc.communicate(timeout=15)
    assert peer.result() == sent_by_kind(kind, b"upload\n") + b"<timeout>"
    assert (out, err, proc.returncode) == (b"greeting\nlate\n", b"", 0)


@pytest.mark.parametrize("kind", STDIN_KINDS)
def test_connect_N_passes_the_end_of_input_on(peer: Peer, tmp_path: Path, kind: str) -> None:
    peer.serve(lambda conn: (read_all(conn), conn.sendall(b"reply\n"))[0])
    proc = spawn(["connect", "-N", f"tcp:127.0.0.1:{peer.port}"], kind, b"upload\n", tmp_path)
    out, err = proc.communicate(timeout=15)
    assert peer.result() == sent_by_kind(kind, b"upload\n")  # and then the end of file
    assert (out, err, proc.returncode) == (b"reply\n", b"", 0)


@pytest.mark.parametrize("kind", STDIN_KINDS)
def test_listen_with_every_kind_of_stdin(tmp_path: Path, kind: str) -> None:
    """nc -l's way: a connection ends when the client has finished sending, once what
    the input has ready has gone out too."""
    port = free_port()
    proc = spawn(["listen", "-v", f"tcp:127.0.0.1:{port}"], kind, b"greeting\n", tmp_path)
    try:
        assert proc.stderr is not None and b"listening on" in proc.stderr.readline()
        time.sleep(0.2)  # the input is ready before the client comes
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(b"hi\n")
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == sent_by_kind(kind, b"greeting\n")
        out, err = proc.communicate(timeout=15)
        assert (out, proc.returncode) == (b"hi\n", 0)
        assert b"Traceback" not in err
    finally:
        proc.kill()
        proc.wait()


def test_input_after_the_peer_half_closed_still_arrives(peer: Peer) -> None:
    """A server that shuts down its side at once still gets the whole upload (each
    direction ends on its own end of file)."""
    def server(conn: socket.socket) -> bytes:
        conn.sendall(b"ready\n")
        conn.shutdown(socket.SHUT_WR)
        return read_all(conn)

    for _ in range(3):
        peer.serve(server)
        proc = subprocess.Popen([*CLI, "connect", "-N", f"tcp:127.0.0.1:{peer.port}"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.3)  # the server's end of file is long there
        proc.stdin.write(b"upload\n")
        proc.stdin.close()
        assert peer.result() == b"upload\n"
        assert proc.wait(timeout=10) == 0


def test_listen_greets_a_client_that_half_closes_at_once() -> None:
    for _ in range(10):
        port = free_port()
        proc = subprocess.Popen([*CLI, "listen", "-v", f"tcp:127.0.0.1:{port}"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin and proc.stderr
        proc.stdin.write(b"greeting\n")
        proc.stdin.flush()
        assert b"listening on" in proc.stderr.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"greeting\n"
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0


def test_detach_reads_no_input_and_crlf(peer: Peer) -> None:
    peer.serve(lambda conn: read_all(conn, timeout=0.5))
    proc = subprocess.run([*CLI, "connect", "-d", "-N", f"tcp:127.0.0.1:{peer.port}"], input=b"unread",
                          capture_output=True, timeout=15)
    assert proc.returncode == 0 and peer.result() == b"<timeout>"  # nothing read, no end of file either
    peer.serve(read_all)
    subprocess.run([*CLI, "connect", "-N", "-C", f"tcp:127.0.0.1:{peer.port}"], input=b"a\nb\r\nc\n\n",
                   check=True, timeout=15)
    assert peer.result() == b"a\r\nb\r\nc\r\n\r\n"


def test_idle_timeout(peer: Peer) -> None:
    peer.serve(lambda conn: (time.sleep(2), b"")[1])
    start = time.monotonic()
    proc = subprocess.run([*CLI, "connect", "-w", "0.5", f"tcp:127.0.0.1:{peer.port}"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
    assert proc.returncode == 0 and proc.stderr == b""
    assert time.monotonic() - start < 3
    for bad in ("-1", "0", "nan", "inf", "1e9", "x"):
        proc = subprocess.run([*CLI, "connect", "-w", bad, "tcp:127.0.0.1:9"], capture_output=True, text=True,
                              timeout=15)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (bad, proc.stderr)
        assert "-w" in proc.stderr.splitlines()[-1]


def test_source_address_and_port_family_and_service_names(peer: Peer) -> None:
    sport = free_port()
    peer.serve(lambda conn: conn.getpeername())
    subprocess.run([*CLI, "connect", "-s", "127.0.0.2", "-p", str(sport), f"tcp:127.0.0.1:{peer.port}"],
                   stdin=subprocess.DEVNULL, check=True, timeout=15)
    assert peer.result() == ("127.0.0.2", sport)
    proc = subprocess.run([*CLI, "connect", "-6", f"tcp:127.0.0.1:{peer.port}"], capture_output=True,
                          text=True, timeout=15)
    assert proc.returncode == 2 and "as IPv6" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "connect", "-s", "10.255.0.1", "tcp:127.0.0.1:discard"], capture_output=True,
                          text=True, timeout=15)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "sockscope connect: source 10.255.0.1:0: no interface has this address")
    proc = subprocess.run([*CLI, "connect", "tcp:127.0.0.1:no-such-service"], capture_output=True, text=True,
                          timeout=15)
    assert proc.returncode == 2 and "service name" in proc.stderr


def test_zero_io_points_at_scan() -> None:
    proc = subprocess.run([*CLI, "connect", "-z", "tcp:127.0.0.1:22"], capture_output=True, text=True,
                          timeout=15)
    assert proc.returncode == 2 and "sockscope scan" in proc.stderr
    assert "sockscope scan" in subprocess.run([*CLI, "connect", "--help"], capture_output=True, text=True,
                                              check=True, timeout=15).stdout


def test_listen_verbose_names_the_port_bound() -> None:
    proc = subprocess.Popen([*CLI, "listen", "-v", "tcp:127.0.0.1:0"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        port = int(line.rsplit(":", 1)[1])
        assert line.startswith("sockscope listen: listening on tcp:127.0.0.1:") and port > 0
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_send_fd_adds_no_byte_to_an_empty_input(shared_dir: Path) -> None:
    from sockscope.services import Server, recv_fds

    for kind in ("unix", "unix-seqpacket"):
        path = str(shared_dir / f"{kind}.sock")
        with Server(f"{kind}:{path}") as server, open(os.devnull) as secret:
            args = ["connect", "-N", f"{kind}:{path}", "--send-fd", str(secret.fileno())]
            proc = subprocess.Popen([*CLI, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, pass_fds=[secret.fileno()])
            conn, peer = server.accept()
            with conn, peer:
                data, fds, _, _ = recv_fds(conn, 100, 1)
                for fd in fds:
                    os.close(fd)
            _, err = proc.communicate(timeout=15)
            if kind == "unix":  # a stream carries descriptors only with data: refused, nothing sent
                assert (data, fds, proc.returncode) == (b"", [], 1)
                assert err.strip() == ("sockscope connect: --send-fd: the input is empty, and a stream "
                                       "socket carries descriptors only with data")
            else:  # a seqpacket message may be empty
                assert (data, len(fds), proc.returncode, err) == (b"", 1, 0, "")


def test_standard_output_closed_full_or_gone(peer: Peer) -> None:
    def chatty(conn: socket.socket) -> None:
        try:
            for _ in range(2000):
                conn.sendall(b"line\n" * 100)
        except OSError:
            pass

    peer.serve(chatty)
    proc = subprocess.run(f"{' '.join(CLI)} connect tcp:127.0.0.1:{peer.port} </dev/null | head -1",
                          shell=True, capture_output=True, text=True, timeout=15)
    assert proc.stdout == "line\n" and proc.stderr == ""
    peer.result()
    peer.serve(lambda conn: conn.sendall(b"data\n"))
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([*CLI, "connect", f"tcp:127.0.0.1:{peer.port}"], stdin=subprocess.DEVNULL,
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=15)
    assert proc.returncode == 1
    assert proc.stderr == "sockscope connect: write error: No space left on device\n"
    peer.result()
    peer.serve(lambda conn: conn.sendall(b"data\n"))
    proc = subprocess.run([*CLI, "connect", f"tcp:127.0.0.1:{peer.port}"], stdin=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=15, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 1
    assert proc.stderr == "sockscope connect: write error: standard output is closed\n"


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT])
def test_listen_ended_by_a_signal_leaves_nothing(shared_dir: Path, signum: int) -> None:
    path = shared_dir / "sig.sock"
    proc = subprocess.Popen([*CLI, "listen", "-v", "-k", "--exec", "sleep 30", f"unix:{path}"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and "listening" in proc.stderr.readline()
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(path))
    assert "connection from" in proc.stderr.readline()
    child = _wait_children(proc.pid, 1)
    proc.send_signal(signum)
    assert proc.wait(timeout=10) == 128 + signum
    rest = proc.stderr.read()
    assert "Traceback" not in rest
    assert not path.exists()
    print(rest)
    assert not Path(f"/proc/{child[0]}").exists(), Path(f"/proc/{child[0]}/status").read_text()[:300]
    client.settimeout(5)
    assert client.recv(10) == b""  # and the client's connection with it
    client.close()


def _wait_children(pid: int, n: int) -> list[int]:
    """The children of pid once there are n of them, each running its program."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = _children(pid)
        if len(children) == n and all(Path(f"/proc/{c}/exe").resolve() != Path(sys.executable).resolve()
                                      for c in children):
            return children
        time.sleep(0.02)
    raise AssertionError(f"{pid} has children {_children(pid)}, not {n}")


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_exec_children_are_reaped_without_waiting_for_the_next_client(shared_dir: Path) -> None:
    path = shared_dir / "z.sock"
    proc = subprocess.Popen([*CLI, "listen", "-v", "-k", "--exec", "true", f"unix:{path}"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and "listening" in proc.stderr.readline()
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(path))
                client.settimeout(5)
                assert client.recv(10) == b""
        deadline = time.monotonic() + 5
        while _children(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [_state(c) for c in _children(proc.pid)] == []  # no zombie left
        proc.terminate()
        assert proc.wait(timeout=10) == 143
    finally:
        proc.kill()
        proc.wait()


def test_exec_program_checked_at_start_and_failures_logged(shared_dir: Path) -> None:
    for command, message in (("/nonexistent", "--exec /nonexistent: no such file"),
                             ("no-such-program-here", "--exec no-such-program-here: not found in PATH"),
                             ('cat "unterminated', "No closing quotation")):
        proc = subprocess.run([*CLI, "listen", "-k", "--exec", command, f"unix:{shared_dir}/x.sock"],
                              capture_output=True, text=True, timeout=15)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert not (shared_dir / "x.sock").exists()
    program = shared_dir / "prog"
    program.write_text("#!/bin/sh\necho served\n")
    program.chmod(0o755)
    path = shared_dir / "e.sock"
    proc = subprocess.Popen([*CLI, "listen", "-k", "--exec", str(program), f"unix:{path}"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        program.chmod(0o644)  # gone bad after the start: this client is dropped, the server goes on
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            client.settimeout(5)
            assert client.recv(100) == b""
        assert proc.stderr is not None
        assert f"--exec {program}: Permission denied" in proc.stderr.readline()
        program.chmod(0o755)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            assert read_all(client) == b"served\n"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 143


def test_listen_where_nobody_may_write(shared_dir: Path) -> None:
    import sockscope.cli.listen
    import sockscope.services.relay  # noqa: F401
    from sockscope.cli.main import main

    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    read_fd, write_fd = os.pipe()

    def listen() -> int:
        os.dup2(write_fd, 2)
        sys.stderr = os.fdopen(2, "w")
        try:
            return main(["listen", f"unix:{private}/x.sock"])
        finally:
            sys.stderr.flush()

    try:
        code = as_nobody(listen)
        os.close(write_fd)
        with os.fdopen(read_fd) as f:
            err = f.read()
    finally:
        private.rmdir()
    assert code == 1 and err == (f"sockscope listen: cannot create {private}/x.sock: no permission to write "
                                 f"in directory {private} or to reach it (Permission denied)\n")


def test_a_terminal_as_stdin(peer: Peer) -> None:
    """Lines typed at a terminal go out as typed, and Ctrl-D is the end of the input."""
    import pty

    peer.serve(lambda conn: (conn.sendall(b"welcome\n"), read_all(conn))[1])
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([*CLI, "connect", "-N", f"tcp:127.0.0.1:{peer.port}"], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(slave)
        assert proc.stdout is not None and proc.stdout.readline() == b"welcome\n"
        os.write(master, b"typed line\n")
        time.sleep(0.2)
        os.write(master, b"\x04")  # Ctrl-D at the start of a line: end of file
        out, err = proc.communicate(timeout=15)
    finally:
        os.close(master)
    assert peer.result() == b"typed line\n"  # and the end of file (-N): read_all returned
    assert (out, err, proc.returncode) == (b"", b"", 0)


def test_services_commands_with_standard_output_closed(peer: Peer, shared_dir: Path) -> None:
    policy = shared_dir / "p.policy"
    policy.write_text("web : 10.0.0.0/8 : allow\n")
    for args in (["check", "--policy", str(policy), "web", "10.1.1.1"],
                 ["guard", "--policy", str(policy), "--daemon", "web", "--port", "80", "--dry-run"]):
        proc = subprocess.run([*CLI, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=15, preexec_fn=lambda: os.close(1))
        assert proc.returncode == 1, proc
        assert proc.stderr == f"sockscope {args[0]}: write error: standard output is closed\n"
    peer.serve(lambda conn: None)  # says nothing: nothing to write, no error
    proc = subprocess.run([*CLI, "connect", f"tcp:127.0.0.1:{peer.port}"], stdin=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, timeout=15, preexec_fn=lambda: os.close(1))
    assert (proc.returncode, proc.stderr) == (0, "")


def test_guard_as_nobody_says_what_it_needs(shared_dir: Path) -> None:
    from privileges import run_as_nobody

    policy = shared_dir / "p.policy"
    policy.write_text("web : 10.0.0.0/8 : allow\n")
    policy.chmod(0o644)
    for args in (["guard", "--policy", str(policy), "--daemon", "web", "--port", "80"], ["guard", "--show"],
                 ["guard", "--remove"]):
        code, err = run_as_nobody(args, preload=["sockscope.policy.guard", "sockscope.policy.nftables",
                                                 "sockscope.services.address"])
        assert code == 1 and err.endswith("needs CAP_NET_ADMIN (run as root)\n"), (args, err)
        assert len(err.splitlines()) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_connect_ended_by_a_signal(peer: Peer, signum: int) -> None:
    peer.serve(lambda conn: read_all(conn, timeout=10))
    proc = subprocess.Popen([*CLI, "connect", "-v", f"tcp:127.0.0.1:{peer.port}"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and "connected to" in proc.stderr.readline()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=15)
    assert (proc.returncode, out, err) == (128 + signum, "", "")
    assert not peer.result().endswith(b"<timeout>")  # the connection went with it


def test_datagram_listener_ended_by_a_signal(shared_dir: Path) -> None:
    path = shared_dir / "dg.sock"
    proc = subprocess.Popen([*CLI, "listen", "-v", f"unix-dgram:{path}"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and "listening" in proc.stderr.readline()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
        client.sendto(b"datagram\n", str(path))
        assert proc.stdout is not None and proc.stdout.readline() == "datagram\n"
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(timeout=10) == 128 + signal.SIGHUP
    assert not path.exists() and "Traceback" not in proc.stderr.read()
