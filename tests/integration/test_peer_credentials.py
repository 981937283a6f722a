"""Peer credentials through SO_PEERCRED and SO_PEERPIDFD, descriptors and credentials passed
between processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sockscope.errors import SockscopeError, UsageError
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
            send_fds(b, [b"two"], [fd, r])
        finally:
            os._exit(0)
    b.close()
    with a:
        message, fds, _flags, _address = recv_fds(a, 100, 2)
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
            message, fds, _flags, _address = recv_fds(conn, 100, 1)
            assert message == b"hello" and len(fds) == 1
            assert os.read(fds[0], 100) == b"via --send-fd"
            os.close(fds[0])
        assert proc.wait(timeout=10) == 0


def test_fd_passing_has_the_standard_librarys_signatures() -> None:
    """send_fds(sock, buffers, fds, flags=0, address=None) and recv_fds(sock, bufsize,
    maxfds, flags=0) -> (data, fds, msg_flags, address), interchangeable with socket's,
    plus close-on-exec, all closed on truncation, and clear errors."""
    import inspect

    assert str(inspect.signature(send_fds)).startswith("(sock: 'socket.socket', buffers:")
    assert list(inspect.signature(send_fds).parameters) == ["sock", "buffers", "fds", "flags", "address"]
    assert list(inspect.signature(recv_fds).parameters) == ["sock", "bufsize", "maxfds", "flags"]
    r, w = os.pipe()
    try:
        pairs = ((send_fds, socket.recv_fds), (socket.send_fds, recv_fds), (send_fds, recv_fds))
        for sender, receiver in pairs:
            a, b = socket.socketpair()
            with a, b:
                assert sender(a, [b"x", b"y"], [r]) == 2
                data, fds, flags, address = receiver(b, 10, 1)
                assert (data, len(fds), flags, address) == (b"xy", 1, 0, None)
                assert os.path.sameopenfile(fds[0], r)
                if receiver is recv_fds:
                    assert not os.get_inheritable(fds[0])  # close-on-exec from the kernel
                os.close(fds[0])
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            send_fds(a, [b"x"], [r, w])
            before = len(os.listdir("/proc/self/fd"))
            with pytest.raises(SockscopeError, match="more descriptors arrived than the 1"):
                recv_fds(b, 10, 1)
            assert len(os.listdir("/proc/self/fd")) == before  # the one that arrived was closed
            assert send_fds(a, [], [r]) == 0  # a datagram may carry descriptors alone
            (passed,) = recv_fds(b, 10, 1)[1]
            os.close(passed)
        a, b = socket.socketpair()
        with a, b, pytest.raises(UsageError, match="at least one byte"):
            send_fds(a, [b""], [r])  # a stream would carry them nowhere
    finally:
        os.close(r)
        os.close(w)


def test_scm_credentials() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        enable_credentials(b)
        send_credentials(a, b"hi")
        data, cred, _ = recv_credentials(b)
        assert data == b"hi" and cred == (os.getpid(), os.geteuid(), os.getegid())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_server_credentials_hold_no_descriptor_past_their_peer(shared_dir: Path) -> None:
    """A pidfd per Unix connection is released with the peer: by ``with``/close, or
    when the peer is dropped, as a script that never closes it does."""
    from sockscope.policy import Policy

    path = str(shared_dir / "leak.sock")
    me = os.path.realpath(sys.executable)
    for policy in (Policy.parse(f"ALL : exe:{me} : allow\n"), None):
        with Server(f"unix:{path}", policy=policy) as server:
            before = _open_fds()
            for n in range(50):
                with socket.socket(socket.AF_UNIX) as client:
                    client.connect(path)
                    conn, peer = server.accept()
                    assert peer.credentials is not None and peer.credentials.exe == me
                    if n % 2:
                        with conn, peer:
                            pass
                    else:
                        conn.close()  # and the peer is simply dropped
                    del conn, peer
            assert _open_fds() == before


def test_exe_and_comm_whatever_the_policy(shared_dir: Path) -> None:
    from sockscope.policy import Policy

    path = str(shared_dir / "who.sock")
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    for policy in (None, Policy.parse("ALL : uid:0 : allow\n"), Policy.parse("ALL : ALL : allow\n")):
        with Server(f"unix:{path}", policy=policy) as server, socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            conn, peer = server.accept()
            with conn, peer:
                assert peer.credentials is not None
                me = os.path.realpath(sys.executable)
                assert (peer.credentials.exe, peer.credentials.comm) == (me, comm)
                assert peer.credentials.pidfd is not None
                assert peer.to_dict()["credentials"]["exe"] == os.path.realpath(sys.executable)  # type: ignore[index]
            assert peer.credentials.pidfd is None  # released
