"""Peer credentials through SO_PEERCRED and SO_PEERPIDFD, descriptors and credentials passed
between processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sockscope.errors import SockscopeError
from sockscope.services import Server, peer_credentials, recv_fds, send_fds
from sockscope.services.fdpass import enable_credentials, recv_credentials, send_credentials

CLI = [sys.executable, "-m", "sockscope"]
pytestmark = pytest.mark.needs_root  # clients dropped to nobody, owners set with chown


def test_peer_credentials_through_pidfd() -> None:
    a, b = socket.socketpair()
    with a, b, peer_credentials(a) as cred:
        assert (cred.pid, cred.uid, cred.gid) == (os.getpid(), os.geteuid(), os.getegid())
        assert cred.pidfd is not None  # Linux 6.5+
        assert cred.exe == os.path.realpath(sys.executable)
        assert cred.comm and cred.comm in Path(f"/proc/{os.getpid()}/comm").read_text()
    with pytest.raises(SockscopeError, match="only for Unix"), socket.socket() as tcp:
        peer_credentials(tcp)


def test_exited_peer_gives_no_executable() -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(b"\0ssc-exited-" + str(os.getpid()).encode())
    listener.listen(1)
    pid = os.fork()
    if pid == 0:
        try:
            c = socket.socket(socket.AF_UNIX)
            c.connect(listener.getsockname())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)  # the peer is gone (and reaped) before we ask
    conn, _ = listener.accept()
    with conn, listener:
        try:
            cred = peer_credentials(conn)
        except SockscopeError:
            return  # the kernel refused: also no executable to trust
        with cred:
            assert cred.pid == pid and cred.exe is None


def test_descriptors_between_processes(shared_dir: Path) -> None:
    data = shared_dir / "payload"
    data.write_text("passed along")
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        try:
            a.close()
            fd = os.open(data, os.O_RDONLY)
            r, w = os.pipe()
            os.write(w, b"through a pipe")
            os.close(w)
            send_fds(b, [fd, r], b"two")
        finally:
            os._exit(0)
    b.close()
    with a:
        message, fds = recv_fds(a)
    os.waitpid(pid, 0)
    assert message == b"two" and len(fds) == 2
    assert os.read(fds[0], 100) == b"passed along"
    assert os.read(fds[1], 100) == b"through a pipe"
    assert not os.get_inheritable(fds[0])
    for fd in fds:
        os.close(fd)


def test_cli_send_fd(shared_dir: Path) -> None:
    path = str(shared_dir / "fd.sock")
    payload = shared_dir / "payload"
    payload.write_text("via --send-fd")
    with Server(f"unix:{path}") as server:
        with open(payload) as f:
            proc = subprocess.Popen([*CLI, "connect", f"unix:{path}", "--send-fd", str(f.fileno())],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=[f.fileno()])
        conn, _ = server.accept()
        proc.stdin.write(b"hello")  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        with conn:
            message, fds = recv_fds(conn)
            assert message == b"hello" and len(fds) == 1
            assert os.read(fds[0], 100) == b"via --send-fd"
            os.close(fds[0])
        assert proc.wait(timeout=10) == 0


def test_scm_credentials() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        enable_credentials(b)
        send_credentials(a, b"hi")
        data, cred, _ = recv_credentials(b)
        assert data == b"hi" and cred == (os.getpid(), os.geteuid(), os.getegid())
