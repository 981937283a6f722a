"""Servers and the listen/connect/check commands on the local host: policies at
accept (root allowed, nobody refused), per datagram and before a TCP byte is
read; relays for every socket kind; errors."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ports import free_port
from privileges import NOBODY, as_nobody
from sockscope.policy import Policy
from sockscope.services import (
    Server,
    aio,
    bind_endpoint,
    parse_endpoint,
)

CLI = [sys.executable, "-m", "sockscope"]
pytestmark = pytest.mark.needs_root  # clients dropped to nobody, owners set with chown


def _client_reads(path: str) -> Callable[[], int]:
    def read() -> int:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        try:
            s.connect(path)
            return 0 if s.recv(100) == b"welcome\n" else 1
        except OSError:
            return 1
        finally:
            s.close()

    return read


def test_unix_server_accepts_root_refuses_nobody(shared_dir: Path) -> None:
    path = str(shared_dir / "p.sock")
    policy = Policy.parse("api : uid:0 : allow\napi : ALL : deny\n", "peer.policy")
    proc = subprocess.Popen([*CLI, "listen", "-v", "-k", "--mode", "0666", "--exec", "echo welcome",
                             "--daemon", "api", "--policy", "/dev/stdin", f"unix:{path}"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin and proc.stderr
        proc.stdin.write("api : uid:0 : allow\napi : ALL : deny\n")
        proc.stdin.close()
        assert "listening on" in proc.stderr.readline()
        assert _client_reads(path)() == 0
        assert as_nobody(_client_reads(path)) == 1
        line = proc.stderr.readline()
        while "refused" not in line:
            line = proc.stderr.readline()
        assert f"uid {NOBODY}" in line and "/dev/stdin:2" in line
        assert _client_reads(path)() == 0  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not os.path.exists(path)
    assert not policy.allows("api", sockscope_peer(NOBODY))


def sockscope_peer(uid: int) -> object:
    from sockscope.services import PeerCredentials

    return PeerCredentials(0, uid, uid)


def test_client_vanishing_during_check_does_not_stop_server(shared_dir: Path) -> None:
    path = str(shared_dir / "v.sock")
    refused: list[str] = []
    policy = Policy.parse("ALL : uid:0 : allow\n")
    with Server(f"unix:{path}", policy=policy, on_refused=lambda p: refused.append(p.address)) as server:
        for _ in range(20):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            c.close()
        good = socket.socket(socket.AF_UNIX)
        good.connect(path)
        good.sendall(b"ping")
        for _ in range(21):
            conn, _peer = server.accept()
            data = conn.recv(10)
            conn.close()
            if data == b"ping":
                break
        else:
            pytest.fail("the live client was never served")
        good.close()


def test_tcp_refused_before_a_byte_is_read() -> None:
    policy = Policy.parse("ALL : 10.0.0.0/8 : allow\n")
    refused: list[str] = []
    with Server("tcp:127.0.0.1:0", policy=policy, on_refused=lambda p: refused.append(p.address)) as server:
        port = server.socket.getsockname()[1]
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"secret")
        server.socket.settimeout(5)
        with pytest.raises(TimeoutError):
            server.socket.settimeout(0.3)
            server.accept()
        c.settimeout(5)
        with pytest.raises(ConnectionResetError):
            c.recv(10)  # reset, not an orderly close
        c.close()
    assert refused and refused[0].startswith("127.0.0.1:")


def test_asyncio_server_with_peer_policy(shared_dir: Path) -> None:
    path = str(shared_dir / "a.sock")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()

    async def main() -> tuple[bytes, bytes]:
        allow = Policy.parse("ALL : uid:0 : allow\n")
        async with await aio.start_server(f"unix:{path}", handler, policy=allow):
            reader, writer = await aio.open_connection(f"unix:{path}")
            writer.write(b"hello\n")
            first = await reader.readline()
            writer.close()
        deny = Policy.parse("ALL : uid:1 : allow\n")
        async with await aio.start_server(f"unix:{path}", handler, policy=deny):
            reader, writer = await aio.open_connection(f"unix:{path}")
            second = await reader.read()  # closed at accept, before anything was read
            writer.close()
        return first, second

    assert asyncio.run(main()) == (b"HELLO\n", b"")


def test_asyncio_server_looks_names_up_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host-name rule makes decisions wait on DNS: the asyncio server takes them in a
    worker thread, so a client whose lookup is slow holds up nobody else."""
    import sockscope.policy.patterns as patterns

    def slow_for_127_0_0_2(address: object) -> None:
        if str(address) == "127.0.0.2":
            time.sleep(0.6)
        return None  # no name: the host-name rule does not match, the address rule does

    monkeypatch.setattr(patterns, "resolve_host", slow_for_127_0_0_2)
    policy = Policy.parse("ALL : .slow.test : deny\nALL : 127.0.0.1 127.0.0.2 : allow\n")
    assert policy.uses_names and not Policy.parse("ALL : 127.0.0.1 : allow\n").uses_names

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()

    def round_trip(port: int, source: str, delay: float) -> tuple[bytes, float]:
        # Blocking clients in their own threads, on their own clocks: a server loop that
        # blocks cannot delay their start.
        time.sleep(delay)
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
            s.sendall(b"hi\n")
            line = s.makefile("rb").readline()
        return line, time.monotonic() - start

    async def main() -> list[tuple[bytes, float]]:
        import concurrent.futures

        async with await aio.start_server("tcp:127.0.0.1:0", handler, policy=policy) as server:
            port = server.socket.getsockname()[1]
            with concurrent.futures.ThreadPoolExecutor(2) as clients:
                slow = clients.submit(round_trip, port, "127.0.0.2", 0.0)
                fast = clients.submit(round_trip, port, "127.0.0.1", 0.15)  # the lookup has started
                done = await asyncio.wrap_future(fast), await asyncio.wrap_future(slow)
            return list(done)

    (fast_line, fast_s), (slow_line, slow_s) = asyncio.run(main())
    assert (fast_line, slow_line) == (b"HI\n", b"HI\n")
    assert fast_s < 0.3 < 0.5 < slow_s  # served while the other lookup was still waiting


def test_cli_errors() -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    with busy:
        port = busy.getsockname()[1]
        proc = subprocess.run([*CLI, "listen", f"tcp:127.0.0.1:{port}"], capture_output=True, text=True,
                              timeout=30)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        f"sockscope listen: tcp:127.0.0.1:{port}: address already in use")
    proc = subprocess.run([*CLI, "connect", "tcp:::1:80"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "brackets" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*CLI, "listen", "--mode", "0660", "tcp:127.0.0.1:0"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and "unix socket files only" in proc.stderr


def test_privileged_port_message() -> None:
    import locale  # noqa: F401 - argparse's gettext, before dropping privileges
    import shlex  # noqa: F401

    import sockscope.cli.check
    import sockscope.cli.listen
    import sockscope.services.relay  # noqa: F401
    from sockscope.cli.main import main

    read_fd, write_fd = os.pipe()

    def listen_low() -> int:
        os.dup2(write_fd, 2)
        sys.stderr = os.fdopen(2, "w")
        try:
            return main(["listen", "tcp:127.0.0.1:80"])
        finally:
            sys.stderr.flush()

    code = as_nobody(listen_low)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        err = f.read()
    start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
    assert code == 1, err
    assert f"net.ipv4.ip_unprivileged_port_start is {start}" in err
    assert "CAP_NET_BIND_SERVICE" in err and len(err.strip().splitlines()) == 1


def test_check_cli_exit_status(shared_dir: Path) -> None:
    policy = shared_dir / "p.conf"
    policy.write_text("sshd : 10.0.0.0/8 EXCEPT 10.0.0.5 : allow\n")
    ok = subprocess.run([*CLI, "check", "--policy", str(policy), "sshd", "10.1.1.1"], capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0 and f"{policy} line 1" in ok.stdout and "granted" in ok.stdout
    no = subprocess.run([*CLI, "check", "--policy", str(policy), "sshd", "10.0.0.5"], capture_output=True,
                        text=True, timeout=30)
    assert no.returncode == 1 and "denied" in no.stdout
    me = subprocess.run([*CLI, "check", "--policy", str(policy), "--json", "sshd", f"pid:{os.getpid()}"],
                        capture_output=True, text=True, timeout=30)
    assert me.returncode == 1 and '"line": null' in me.stdout
    policy.write_text("sshd : user:no-such-user-here : allow\n")
    bad = subprocess.run([*CLI, "check", "--policy", str(policy), "sshd", "10.1.1.1"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"sockscope check: {policy}:1:8: unknown user 'no-such-user-here'"


def test_relay_round_trip_unix_kinds(shared_dir: Path) -> None:
    for kind in ("unix", "unix-seqpacket", "unix-dgram"):
        path = str(shared_dir / f"{kind}.sock")
        server = subprocess.Popen([*CLI, "listen", "-v", "--exec", "tr a-z A-Z", f"{kind}:{path}"],
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert server.stderr and "listening" in server.stderr.readline()
            if kind == "unix-dgram":
                c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                c.bind(b"")
                c.settimeout(10)
                c.sendto(b"datagram", path)
                assert c.recv(100) == b"DATAGRAM"
                c.close()
            else:
                out = subprocess.run([*CLI, "connect", "-N", f"{kind}:{path}"], input=b"hello",
                                     capture_output=True, timeout=30)
                assert out.stdout == b"HELLO", out
        finally:
            server.terminate()
            server.wait(timeout=10)
        deadline = time.monotonic() + 5
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists(path)
    ep = bind_endpoint(parse_endpoint("unix:@ssc-abstract-test"))
    ep.close()


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_relay_round_trip_inet(kind: str) -> None:
    port = free_port(socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    server = subprocess.Popen([*CLI, "listen", "-v", "--exec", "tr a-z A-Z", f"{kind}:127.0.0.1:{port}"],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr and "listening" in server.stderr.readline()
        out = subprocess.run([*CLI, "connect", "-N", f"{kind}:127.0.0.1:{port}"], input=b"hello",
                             capture_output=True, timeout=30)
        assert out.stdout == b"HELLO" and out.returncode == 0, out
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_exe_rule_uses_the_verified_executable(shared_dir: Path) -> None:
    path = str(shared_dir / "exe.sock")
    me = os.path.realpath(sys.executable)
    for rule, allowed in ((f"ALL : exe:{me} : allow\n", True), ("ALL : exe:/bin/false : allow\n", False)):
        with Server(f"unix:{path}", policy=Policy.parse(rule)) as server:
            server.socket.settimeout(0.5)
            client = socket.socket(socket.AF_UNIX)
            client.connect(path)
            try:
                conn, peer = server.accept()
            except TimeoutError:
                assert not allowed
            else:
                assert allowed and peer.credentials is not None and peer.credentials.exe == me
                conn.close()
            client.close()


def test_max_conns_closes_the_extra_connection(shared_dir: Path) -> None:
    path = str(shared_dir / "max.sock")
    server = subprocess.Popen([*CLI, "listen", "-v", "-k", "--max-conns", "1", "--exec", "sleep 3",
                               f"unix:{path}"], stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr and "listening" in server.stderr.readline()
        first = socket.socket(socket.AF_UNIX)
        first.connect(path)
        assert "connection from" in server.stderr.readline()
        second = socket.socket(socket.AF_UNIX)  # refused before any "connection from" line
        second.connect(path)
        second.settimeout(5)
        assert second.recv(10) == b""  # closed at once
        assert "1 connections already" in server.stderr.readline()
        first.settimeout(0.3)
        with pytest.raises(TimeoutError):
            first.recv(10)  # still being served
        first.close()
        second.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_unix_datagrams_checked_one_by_one(shared_dir: Path) -> None:
    path = str(shared_dir / "dg.sock")
    policy = shared_dir / "dg.policy"
    policy.write_text("ALL : uid:0 : allow\n")
    server = subprocess.Popen([*CLI, "listen", "-v", "--policy", str(policy), "--mode", "0666",
                               "--exec", "tr a-z A-Z", f"unix-dgram:{path}"],
                              stderr=subprocess.PIPE, text=True)

    def ask() -> int:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.bind(b"")
        c.settimeout(2)
        try:
            c.sendto(b"ping", path)
            return 0 if c.recv(100) == b"PING" else 1
        except OSError:
            return 1
        finally:
            c.close()

    try:
        assert server.stderr and "listening" in server.stderr.readline()
        assert ask() == 0
        assert as_nobody(ask) == 1
        line = server.stderr.readline()
        assert "refused" in line and "uid 65534" in line, line
        assert ask() == 0
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_keep_open_serves_the_next_client_after_a_reset(shared_dir: Path) -> None:
    path = str(shared_dir / "k.sock")
    server = subprocess.Popen([*CLI, "listen", "-v", "-k", f"unix:{path}"], stdin=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        assert server.stderr and server.stdin and b"listening" in server.stderr.readline()
        first = socket.socket(socket.AF_UNIX)
        first.connect(path)
        assert b"connection from" in server.stderr.readline()
        first.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        first.close()
        server.stdin.write(b"queued\n")  # input while nobody is connected waits for the next client
        server.stdin.flush()
        time.sleep(0.2)
        second = socket.socket(socket.AF_UNIX)
        second.connect(path)
        assert b"connection from" in server.stderr.readline()
        server.stdin.write(b"second\n")
        server.stdin.flush()
        second.settimeout(5)
        got = b""
        while not got.endswith(b"second\n"):
            chunk = second.recv(100)
            assert chunk, got
            got += chunk
        assert got == b"queued\nsecond\n"
        second.close()
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_relay_ends_quietly_when_the_peer_is_gone() -> None:
    from sockscope.services.relay import Input, Output, RelayOptions, relay_stream

    a, b = socket.socketpair()
    b.close()
    r, w = os.pipe()
    os.write(w, b"into the void")
    out_r, out_w = os.pipe()
    try:
        # EPIPE or EOF: either way it returns
        assert relay_stream(a, Input(r), Output(out_w), RelayOptions()) in ("done", "reset")
    finally:
        for fd in (r, w, out_r, out_w):
            os.close(fd)
        a.close()


def test_abstract_names_and_the_classic_pair(shared_dir: Path) -> None:
    name = f"unix:@ssc-test-{os.getpid()}"
    server = subprocess.Popen([*CLI, "listen", "-v", "--exec", "tr a-z A-Z", name], stderr=subprocess.PIPE,
                              text=True)
    try:
        assert server.stderr and "listening" in server.stderr.readline()
        out = subprocess.run([*CLI, "connect", "-N", name], input=b"abstract", capture_output=True,
                             timeout=30)
        assert out.stdout == b"ABSTRACT", out
    finally:
        server.terminate()
        server.wait(timeout=10)
    allow, deny = shared_dir / "hosts.allow", shared_dir / "hosts.deny"
    allow.write_text("sshd : 192.168.\n")
    deny.write_text("sshd : ALL\n")
    args = [*CLI, "check", "--hosts-allow", str(allow), "--hosts-deny", str(deny)]
    no_match = f"nothing: no rule matched in {allow} or {deny}"
    for daemon, client, code, where in (("sshd", "192.168.1.9", 0, f"{allow} line 1"),
                                        ("sshd", "10.0.0.1", 1, f"{deny} line 1"),
                                        ("ftpd", "10.0.0.1", 0, no_match)):
        proc = subprocess.run([*args, daemon, client], capture_output=True, text=True, timeout=30)
        assert proc.returncode == code and where in proc.stdout, proc.stdout


def test_asyncio_server_closes_as_asyncio_server_does(shared_dir: Path) -> None:
    """close() is a plain method that stops accepting at once; connections being
    served go on and wait_closed() waits for them; close_clients() ends them."""
    import inspect

    assert not inspect.iscoroutinefunction(aio.AsyncServer.close)
    assert inspect.iscoroutinefunction(aio.AsyncServer.wait_closed)
    path = str(shared_dir / "close.sock")
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: object) -> None:
        await release.wait()
        writer.write(b"done\n")
        await writer.drain()

    async def main() -> tuple[bytes, bool, bool]:
        server = await aio.start_server(f"unix:{path}", handler)
        reader, writer = await aio.open_connection(f"unix:{path}")
        await asyncio.sleep(0.05)  # accepted
        assert server.close() is None and not server.is_serving()
        assert not os.path.exists(path)  # no new client can come
        waiting = asyncio.create_task(server.wait_closed())
        await asyncio.sleep(0.1)
        still_waiting = not waiting.done()  # the connection is still being served
        release.set()
        line = await reader.readline()
        await asyncio.wait_for(waiting, 5)
        writer.close()
        # close_clients: a handler that would wait forever is ended
        release.clear()
        server = await aio.start_server(f"unix:{path}", handler)
        reader, writer = await aio.open_connection(f"unix:{path}")
        await asyncio.sleep(0.05)
        server.close()
        server.close_clients()
        await asyncio.wait_for(server.wait_closed(), 5)
        ended = await reader.read() == b""
        writer.close()
        return line, still_waiting, ended

    assert asyncio.run(main()) == (b"done\n", True, True)
