"""``sockscope watch`` against live loopback sockets: new, state, closed events.

Each test watches one port of its own (``sport = :P or dport = :P``), so other
traffic on the host cannot disturb it. The CLI runs as a subprocess; a test
knows it is listening once it reports the close of a probe socket (see
``Watch.ready``), which is also the proof that closes come from the kernel's
destroy messages rather than from polls.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import sockscope
from sockscope.platform import linux
from topology import Topology

pytestmark = pytest.mark.needs_root

CLI = [sys.executable, "-m", "sockscope", "watch"]
Event = dict[str, Any]


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    while True:
        with socket.socket() as t:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def port_filter(port: int) -> list[str]:
    return ["sport", "=", f":{port}", "or", "dport", "=", f":{port}"]


def inode(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


class Watch:
    """``sockscope watch`` as a subprocess, its stdout lines read by a thread."""

    def __init__(self, *args: str, jsonl: bool = True) -> None:
        argv = [*CLI, *(["--jsonl"] if jsonl else []), *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stopped: tuple[int, str] | None = None
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_line(self, pred: Callable[[str], bool], timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching line within {timeout}s; got {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if pred(line):
                return line

    def wait(self, pred: Callable[[Event], bool], timeout: float = 3.0) -> Event:
        line = self.wait_line(lambda text: pred(json.loads(text)), timeout)
        event: Event = json.loads(line)
        return event

    def quiet(self, pred: Callable[[Event], bool], seconds: float) -> list[Event]:
        """The events matching ``pred`` among those arriving within ``seconds``."""
        found: list[Event] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if pred(json.loads(line)):
                found.append(json.loads(line))
        return found

    def ready(self, port: int) -> None:
        """Probe with short-lived UDP sockets on ``port`` until one is reported closed."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", port))
            try:
                # ":PORT" is in both formats: "127.0.0.1:PORT" and "port":PORT.
                self.wait_line(lambda text: "closed" in text and f":{port}" in text, 0.3)
                return
            except AssertionError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"sockscope watch exited: {self.stop()}") from None
        raise AssertionError("sockscope watch never reported a probe closing")

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Signal, reap and close the pipes; again later, the same answer."""
        if self.stopped is not None:
            return self.stopped
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=5)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None and self.proc.stdout is not None
        self.reader.join(timeout=5)  # it ends at the closed stdout's end of file
        errors = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.stopped = (self.proc.returncode, errors)
        return self.stopped


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def start_watch() -> Iterator[Callable[..., Watch]]:
    """Starts ``Watch`` processes; whatever a test leaves running is stopped after it."""
    started: list[Watch] = []

    def start(*args: str, jsonl: bool = True) -> Watch:
        started.append(Watch(*args, jsonl=jsonl))
        return started[-1]

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def watcher(start_watch: Callable[..., Watch], port: int) -> Watch:
    w = start_watch("--interval", "0.1", *port_filter(port))
    w.ready(port)
    return w


def ports(event: Event) -> tuple[int | None, int | None]:
    s = event["socket"]
    return s["local"]["port"], (s["remote"] or {}).get("port")


def test_tcp_connection_is_reported_new_then_closed_with_owners(watcher: Watch, port: int) -> None:
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", port))
    lst.listen()
    cli = socket.create_connection(("127.0.0.1", port))
    srv, _ = lst.accept()
    cport = cli.getsockname()[1]
    mine = {(port, None): lst, (cport, port): cli, (port, cport): srv}
    new: dict[tuple[int | None, int | None], Event] = {}
    while len(new) < 3:
        ev = watcher.wait(lambda e: e["event"] == "new" and ports(e) in mine)
        new[ports(ev)] = ev
    for key, sock in mine.items():
        s = new[key]["socket"]
        assert s["proto"] == "tcp" and s["inode"] == inode(sock)
        assert [(o["pid"], o["fd"]) for o in s["owners"]] == [(os.getpid(), sock.fileno())]
    assert new[(port, None)]["socket"]["state"] == "LISTEN"
    assert new[(cport, port)]["socket"]["state"] == "ESTABLISHED"

    fds = {key: sock.fileno() for key, sock in mine.items()}
    for sock in (cli, srv, lst):
        sock.close()
    closed: dict[tuple[int | None, int | None], Event] = {}
    while len(closed) < 3:
        ev = watcher.wait(lambda e: e["event"] == "closed" and ports(e) in mine)
        closed[ports(ev)] = ev
    for key, ev in closed.items():
        # Same socket (cookie) as reported new, and it keeps the owners it had then.
        assert ev["socket"]["cookie"] == new[key]["socket"]["cookie"]
        assert [(o["pid"], o["fd"]) for o in ev["socket"]["owners"]] == [(os.getpid(), fds[key])]
    # The client closed first, so the kernel keeps its TIME_WAIT remnant for a
    # minute: the connection is over, and later polls must not report it anew.
    assert watcher.quiet(lambda e: ports(e) in mine, 0.5) == []


def test_connection_shorter_than_a_poll_is_still_reported_closed(
        start_watch: Callable[..., Watch], port: int) -> None:
    # Polls 2 s apart: only the kernel's destroy messages can report this connection.
    w = start_watch("--interval", "2", *port_filter(port))
    w.ready(port)
    with socket.socket() as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", port))
        lst.listen()
        start = time.perf_counter()
        cli = socket.create_connection(("127.0.0.1", port))
        srv, _ = lst.accept()
        cport = cli.getsockname()[1]
        cli.close()
        srv.close()
        lifetime = time.perf_counter() - start
        assert lifetime < 0.005, f"connection lived {lifetime * 1000:.1f} ms, test is moot"
        want = {(cport, port), (port, cport)}  # the client's end and the server's
        while want:
            ev = w.wait(lambda e: e["event"] == "closed" and ports(e) in want)
            want.remove(ports(ev))
            assert ev["socket"]["proto"] == "tcp" and ev["socket"]["family"] == "inet"
    rc, err = w.stop()
    assert rc == 0 and "Traceback" not in err


def test_udp_socket_new_state_change_closed(watcher: Watch, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("127.0.0.1", port))
        ev = watcher.wait(lambda e: e["event"] == "new" and ports(e) == (port, None))
        assert ev["socket"]["proto"] == "udp" and ev["socket"]["state"] == "UNCONN"
        assert [o["pid"] for o in ev["socket"]["owners"]] == [os.getpid()]
        u.connect(("127.0.0.1", 9))  # UDP connect sends nothing; it only fixes the peer
        ev = watcher.wait(lambda e: e["event"] == "state" and ports(e) == (port, 9))
        assert (ev["old_state"], ev["socket"]["state"]) == ("UNCONN", "ESTABLISHED")
        cookie = ev["socket"]["cookie"]
    ev = watcher.wait(lambda e: e["event"] == "closed" and ports(e) == (port, 9))
    assert ev["socket"]["cookie"] == cookie


def test_count_stops_after_n_events(start_watch: Callable[..., Watch], port: int) -> None:
    w = start_watch("--count", "1", *port_filter(port))
    deadline = time.monotonic() + 10
    while w.proc.poll() is None and time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))  # each probe's close is an event
        time.sleep(0.1)
    rc, err = w.stop()
    w.reader.join(5)
    assert rc == 0 and err == ""
    assert w.lines.qsize() == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_ends_the_line_stream_cleanly(start_watch: Callable[..., Watch], port: int,
                                             sig: int) -> None:
    w = start_watch("--interval", "0.1", *port_filter(port), jsonl=False)
    w.ready(port)
    # "12:00:01.234 closed udp UNCONN 127.0.0.1:PORT", then owners if a poll saw the probe
    stamp, event, proto, state, where = w.seen[-1].split()[:5]
    assert len(stamp) == 12 and stamp[8] == "." and (event, proto) == ("closed", "udp")
    assert where == f"127.0.0.1:{port}" and state == "UNCONN"
    rc, err = w.stop(sig)
    assert rc == 0 and "Traceback" not in err, err


def test_filter_that_does_not_parse_is_one_line_exit_2() -> None:
    proc = subprocess.run([*CLI, "sport", "=", "=", "("], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.startswith("sockscope watch: ") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_api_in_a_namespace_and_close_releases_the_netlink_sockets(topology: Topology) -> None:
    ns = topology.add_netns("watch")
    ref = linux.resolve_netns(ns.name)

    def socket_fds() -> set[int]:
        fds = set()
        for name in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                    fds.add(int(name))
            except OSError:
                continue  # the listing's own descriptor, gone by now
        return fds

    before = socket_fds()
    events = sockscope.watch("sport = :7000 or dport = :7000", netns=ns.name, interval=0.05,
                             proto="tcp")
    # Set up on return: a socket opened now is reported new, not part of the baseline.
    with linux.in_netns(ref):
        lst = socket.socket(socket.AF_INET6)
    with lst:
        lst.bind(("::1", 7000))
        lst.listen()
        got: list[sockscope.SocketEvent] = []

        def consume() -> None:
            for ev in events:
                got.append(ev)
                if ev.event == "new":
                    return

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "no event within 5 s"
    (ev,) = got
    assert ev.socket.netns == ns.name and ev.socket.family == "inet6"
    assert ev.socket.state == "LISTEN" and ev.socket.owners[0].pid == os.getpid()
    assert ev.to_dict()["socket"]["local"] == {"address": "::1", "port": 7000}
    events.close()
    assert socket_fds() == before  # the watch's two netlink sockets are closed
