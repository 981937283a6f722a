"""``sockscope exporter`` as a real process over namespaces the tests build: what it
exports, HTTP behaviour, bad input and faults (#16)."""

from __future__ import annotations

import base64
import gzip
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from exporter_helpers import CLI, request, running, samples, spawn_ready, stop, value, wait_for

from certs import make_cert
from topology import Netns, Topology

pytestmark = pytest.mark.needs_root

# A listener with backlog 7 that accepted 3 connections and left 2 waiting in its
# queue, all in one process; prints "ready".
SERVER = r"""
import socket, sys, time
lst = socket.socket()
lst.bind(("127.0.0.1", int(sys.argv[1])))
lst.listen(7)
keep = []
for _ in range(3):
    keep.append(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
    keep.append(lst.accept()[0])
for _ in range(2):
    keep.append(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
print("ready", flush=True)
time.sleep(120)
"""


def namespace(topo: Topology, label: str = "a") -> Netns:
    """A namespace of the test's with its loopback up."""
    ns = topo.add_netns(label)
    topo.run(ns, "ip", "link", "set", "lo", "up")
    return ns


def comm(proc: subprocess.Popen[Any]) -> str:
    """The process's command name as the kernel has it (``ip netns exec`` execs it)."""
    return Path(f"/proc/{proc.pid}/comm").read_text().strip()


def test_listeners_connections_queues_and_kernel_counters(topology: Topology) -> None:
    a = namespace(topology)
    server = spawn_ready(topology, a, SERVER, "8080")
    with running("-N", a.name) as exporter:
        found = exporter.metrics()
    assert value(found, "sockscope_listener_info", netns=a.name, proto="tcp", address="127.0.0.1",
                 port="8080", command=comm(server)) == 1
    assert value(found, "sockscope_listener_queue_length", netns=a.name, port="8080") == 2
    assert value(found, "sockscope_listener_backlog", netns=a.name, port="8080") == 7
    # 5 connections, both ends established (the 2 waiting ones too, in the accept queue).
    assert value(found, "sockscope_sockets", netns=a.name, proto="tcp", family="inet",
                 state="ESTABLISHED") == 10
    assert value(found, "sockscope_listen_overflows", "sockscope_listen_overflows_total", netns=a.name) == 0
    assert value(found, "sockscope_tcp_time_wait_sockets", netns=a.name) == 0
    assert value(found, "sockscope_tcp_orphan_sockets", netns=a.name) == 0
    assert value(found, "sockscope_socket_memory_bytes", proto="tcp") is not None
    assert value(found, "sockscope_exporter_scrape_errors", "sockscope_exporter_scrape_errors_total",
                 part="inventory") == 0
    # Only the namespace asked for.
    assert {s.labels["netns"] for s in found["sockscope_sockets"]} == {a.name}


def test_a_real_scrape_passes_promtool_and_the_openmetrics_parser(topology: Topology) -> None:
    """promtool check metrics (it reads the text format) on a scrape with every
    family; the OpenMetrics answer through prometheus-client's strict parser."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

    a = namespace(topology)
    spawn_ready(topology, a, SERVER, "8080")
    with running("-N", a.name, "--pids", "--interfaces") as exporter:
        text = exporter.scrape()
        om = exporter.scrape(headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert "sockscope_listener_info" in text.text and "sockscope_process_connections" in text.text
    done = subprocess.run(["promtool", "check", "metrics"], input=text.body, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    names = {f.name for f in openmetrics(om.text)}
    assert {"sockscope_listen_overflows", "sockscope_interface_receive_bytes"} <= names


# A listener with backlog 1 that never accepts, and 8 clients: the queue overflows.
OVERFLOW = r"""
import socket, sys, time
lst = socket.socket()
lst.bind(("127.0.0.1", 8081))
lst.listen(1)
clients = []
for _ in range(8):
    c = socket.socket()
    c.setblocking(False)
    c.connect_ex(("127.0.0.1", 8081))
    clients.append(c)
time.sleep(1.5)
print("ready", flush=True)
time.sleep(120)
"""


def test_a_full_accept_queue_counts_overflows_and_time_wait(topology: Topology) -> None:
    a = namespace(topology)
    spawn_ready(topology, a, OVERFLOW)
    # TIME_WAIT: a connection closed by the side that closes first.
    topology.run(a, sys.executable, "-c", (
        "import socket\nl=socket.create_server(('127.0.0.1', 8082))\n"
        "c=socket.create_connection(('127.0.0.1', 8082))\ns,_=l.accept()\nc.close()\ns.recv(1)\ns.close()\n"))
    with running("-N", a.name) as exporter:
        found = exporter.metrics()
    assert value(found, "sockscope_listen_overflows", "sockscope_listen_overflows_total", netns=a.name)
    assert value(found, "sockscope_listen_drops", "sockscope_listen_drops_total", netns=a.name)
    assert value(found, "sockscope_tcp_time_wait_sockets", netns=a.name) == 1
    assert value(found, "sockscope_sockets", netns=a.name, proto="tcp", family="inet", state="TIME_WAIT") == 1


def test_content_negotiation_gzip_and_malformed_accept_headers(topology: Topology) -> None:
    a = topology.add_netns("a")
    with running("-N", a.name) as exporter:
        plain = exporter.scrape()
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        om = exporter.scrape(
            headers={"Accept": "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"})
        assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.text.endswith("# EOF\n")
        assert "# TYPE sockscope_listen_overflows counter" in om.text
        zipped = exporter.scrape(headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert b"sockscope_sockets" in gzip.decompress(zipped.body)
        assert "content-encoding" not in exporter.scrape(headers={"Accept-Encoding": "gzip;q=0"}).headers
        for accept in ("application/openmetrics-text; version=abc", "text/plain;version=x.y",
                       ";;;,,,=", "*/*", "\x7f\x01garbage", "a" * 4000):
            reply = exporter.scrape(headers={"Accept": accept})
            assert reply.status == 200, (accept, reply.status)
            assert reply.headers["content-type"].startswith("text/plain"), accept
            assert "sockscope_sockets" in reply.text
        page = exporter.scrape("/")
        assert page.status == 200 and 'href="metrics"' in page.text
        assert exporter.scrape("/nothing").status == 404
        only = samples(exporter.scrape("/metrics?name[]=sockscope_exporter_build_info").text)
        assert set(only) == {"sockscope_exporter_build_info"}


def test_concurrent_scrapes_share_collections(topology: Topology) -> None:
    a = topology.add_netns("a")
    with running("-N", a.name) as exporter:
        replies: list[int] = []

        def scrape() -> None:
            replies.append(exporter.scrape().status)

        threads = [threading.Thread(target=scrape) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert replies == [200] * 40
        made = value(exporter.metrics(), "sockscope_exporter_collections",
                     "sockscope_exporter_collections_total")
        assert made is not None and made < 40


def test_min_interval_reuses_a_collection(topology: Topology) -> None:
    a = topology.add_netns("a")
    with running("-N", a.name, "--min-interval", "60") as exporter:
        for _ in range(5):
            found = exporter.metrics()
        assert value(found, "sockscope_exporter_collections", "sockscope_exporter_collections_total") == 1


def test_clients_that_never_send_or_never_read_do_not_block_scrapes(topology: Topology) -> None:
    a = topology.add_netns("a")
    with running("-N", a.name) as exporter:
        silent = [socket.create_connection((exporter.host, exporter.port)) for _ in range(8)]
        deaf = []
        for _ in range(8):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            s.connect((exporter.host, exporter.port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 50)  # 50 requests, never read
            deaf.append(s)
        try:
            started = time.monotonic()
            assert exporter.scrape(timeout=10).status == 200
            assert time.monotonic() - started < 5
        finally:
            for s in silent + deaf:
                s.close()


def test_scrapes_during_namespace_teardown_and_processes_exiting(topology: Topology) -> None:
    """Every namespace on the host watched, while namespaces come and go and processes
    holding sockets in them exit: every scrape answers, the inventory never fails."""
    stop_churn = threading.Event()
    churned = 0

    def churn() -> None:
        nonlocal churned
        while not stop_churn.is_set():
            ns = topology.add_netns(f"churn{churned % 1000}")
            topology.run(ns, "ip", "link", "set", "lo", "up")
            holder = topology.spawn(ns, sys.executable, "-c",
                                    "import socket,time\nl=socket.create_server(('127.0.0.1',9000))\n"
                                    "c=socket.create_connection(('127.0.0.1',9000))\ntime.sleep(0.3)\n")
            time.sleep(0.1)
            subprocess.run(["ip", "netns", "delete", ns.name], check=True)
            holder.wait(timeout=10)
            churned += 1

    with running() as exporter:
        worker = threading.Thread(target=churn)
        worker.start()
        try:
            # On a busy shared host a scrape of every namespace can take many seconds
            # (every socket of every other test there): at least 2 scrapes and 5
            # namespaces gone, within a bound.
            deadline = time.monotonic() + 120
            scrapes = 0
            while (scrapes < 2 or churned < 5) and time.monotonic() < deadline:
                assert exporter.scrape(timeout=120).status == 200
                scrapes += 1
        finally:
            stop_churn.set()
            worker.join()
        reply = exporter.scrape(timeout=120)
        assert reply.status == 200
        found = samples(reply.text)
    assert churned >= 5 and scrapes >= 2
    assert value(found, "sockscope_exporter_scrape_errors", "sockscope_exporter_scrape_errors_total",
                 part="inventory") == 0
    assert value(found, "sockscope_exporter_scrape_errors", "sockscope_exporter_scrape_errors_total",
                 part="collection") == 0


def test_a_named_namespace_deleted_while_watched(topology: Topology) -> None:
    a, b = topology.add_netns("a"), topology.add_netns("b")
    with running("-N", a.name, "-N", b.name) as exporter:
        assert value(exporter.metrics(), "sockscope_sockets", netns=b.name, proto="netlink",
                     family="netlink", state="UNCONN")
        subprocess.run(["ip", "netns", "delete", b.name], check=True)
        found = exporter.metrics()
    assert not [s for s in found["sockscope_sockets"] if s.labels["netns"] == b.name]
    assert [s for s in found["sockscope_sockets"] if s.labels["netns"] == a.name]
    assert value(found, "sockscope_exporter_scrape_errors", "sockscope_exporter_scrape_errors_total",
                 part="netns") == 1


def _one_line_exit(argv: list[str], status: int, pattern: str, **kwargs: Any) -> None:
    done = subprocess.run([*CLI, "exporter", *argv], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, **kwargs)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == status, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_port_in_use_bad_config_and_bad_arguments_are_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        _one_line_exit(["--listen", f"127.0.0.1:{port}"], 1, rf"cannot listen on 127\.0\.0\.1:{port}: "
                                                             r"address already in use")
    _one_line_exit(["--listen", "192.0.2.1:0"], 1, "no such address on this host")
    _one_line_exit(["--listen", "nonsense"], 2, "expected HOST:PORT")
    _one_line_exit(["--max-series", "0"], 2, "at least 1")
    _one_line_exit(["--min-interval", "inf"], 2, "seconds")
    bad = tmp_path / "web.yml"
    bad.write_text("tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n")
    _one_line_exit(["--listen", "127.0.0.1:0", "--web.config.file", str(bad)], 1,
                   rf"web config {bad}: cert_file .*missing.crt: no such file")
    _one_line_exit(["--listen", "127.0.0.1:0", "--web.config.file", str(tmp_path / "none.yml")], 1,
                   "No such file")


def test_without_privilege_one_line_and_with_the_units_capabilities_it_runs(topology: Topology) -> None:
    """As nobody: refused in one line. As nobody with the capabilities the systemd unit
    grants (ambient), it sees a root process's listener and its command."""
    a = namespace(topology)
    server = spawn_ready(topology, a, SERVER, "8080")
    setpriv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    done = subprocess.run([*setpriv, *CLI, "exporter", "--listen", "127.0.0.1:0"], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "CAP_SYS_ADMIN" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    caps = "+sys_admin,+sys_ptrace,+dac_read_search,+net_admin"
    proc = subprocess.Popen([*setpriv, f"--inh-caps={caps}", f"--ambient-caps={caps}", *CLI, "exporter",
                             "--listen", "127.0.0.1:0", "-N", a.name], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 20)
        line = proc.stderr.readline().decode() if ready else ""
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        found = samples(request("127.0.0.1", port).text)
    finally:
        status, err = stop(proc)
    assert value(found, "sockscope_listener_info", netns=a.name, port="8080", command=comm(server)) == 1
    assert status == 128 + signal.SIGTERM and "Traceback" not in err, err


def test_tls_and_basic_auth_from_a_web_config_file(tmp_path: Path, topology: Topology) -> None:
    ca_cert, ca_key = make_cert(tmp_path, "ca", san="DNS:ca")
    make_cert(tmp_path, "server", ca=(ca_cert, ca_key))
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    a = topology.add_netns("a")
    with running("-N", a.name, "--web.config.file", str(tmp_path / "web.yml")) as exporter:
        assert exporter.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(ca_cert))
        denied = exporter.scrape(context=context)
        assert denied.status == 401 and denied.headers["www-authenticate"].startswith("Basic")
        token = base64.b64encode(b"prometheus:scrape-me").decode()
        ok = exporter.scrape(headers={"Authorization": f"Basic {token}"}, context=context)
        assert ok.status == 200 and "sockscope_sockets" in ok.text
        assert ok.headers["x-frame-options"] == "deny"
        wrong = base64.b64encode(b"prometheus:nope").decode()
        assert exporter.scrape(headers={"Authorization": f"Basic {wrong}"}, context=context).status == 401
        with pytest.raises(ssl.SSLError):
            exporter.scrape(context=ssl.create_default_context())  # a CA that did not sign it
        # Plain HTTP to the TLS port: the handshake fails, the server goes on.
        with pytest.raises((ConnectionError, OSError)):
            request(exporter.host, exporter.port, timeout=5)
        assert exporter.scrape(headers={"Authorization": f"Basic {token}"}, context=context).status == 200


def test_interface_counters_only_with_the_flag(topology: Topology) -> None:
    a = namespace(topology)
    topology.run(a, "ping", "-c", "3", "-i", "0.2", "-q", "127.0.0.1")
    with running("-N", a.name) as exporter:
        assert "sockscope_interface_receive_bytes" not in exporter.metrics()
    with running("-N", a.name, "--interfaces") as exporter:
        found = exporter.metrics()
    assert value(found, "sockscope_interface_receive_packets", netns=a.name, interface="lo") == 6
    assert value(found, "sockscope_interface_transmit_bytes", netns=a.name, interface="lo") == value(
        found, "sockscope_interface_receive_bytes", netns=a.name, interface="lo")


# A TCP sink named sys.argv[1] (its command name) on 127.0.0.1:8090: reads
# everything every client sends; prints "ready".
SINK = r"""
import socket, sys, threading, time
open("/proc/self/comm", "w").write(sys.argv[1])
lst = socket.create_server(("127.0.0.1", 8090), backlog=64)
def drain(conn):
    while conn.recv(1 << 16):
        pass
def serve():
    while True:
        threading.Thread(target=drain, args=(lst.accept()[0],), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
print("ready", flush=True)
time.sleep(300)
"""
# A client named sys.argv[1] that sends sys.argv[2] bytes to the sink, then holds the
# connection; prints "ready" once everything is sent.
SENDER = r"""
import socket, sys, time
open("/proc/self/comm", "w").write(sys.argv[1])
s = socket.create_connection(("127.0.0.1", 8090))
s.sendall(b"x" * int(sys.argv[2]))
print("ready", flush=True)
time.sleep(300)
"""


def within(measured: float | None, expected: float, share: float = 0.02) -> bool:
    return measured is not None and abs(measured - expected) <= share * expected


def test_per_process_bytes_pids_and_the_series_cap(topology: Topology) -> None:
    a = namespace(topology)
    spawn_ready(topology, a, SINK, "sink")
    with running("-N", a.name, "--max-series", "2") as capped, running("-N", a.name, "--pids") as by_pid:
        capped.scrape()  # the baseline is taken before any byte moves
        senders = {name: spawn_ready(topology, a, SENDER, name, str(size))
                   for name, size in (("alpha", 3_000_000), ("beta", 1_000_000), ("gamma", 0))}

        def all_received() -> dict[str, list[Any]] | None:
            f = capped.metrics()
            got = value(f, "sockscope_process_tcp_received_bytes",
                        "sockscope_process_tcp_received_bytes_total", command="sink", netns=a.name)
            return f if within(got, 4_000_000) else None

        found = wait_for(all_received)
        by_pid_found = by_pid.metrics()
    sent = {s.labels["command"]: s.value for s in found["sockscope_process_tcp_sent_bytes"]
            if s.name.endswith("_total")}
    # Two label sets kept, the busiest; beta and gamma added up into "other".
    assert set(sent) == {"sink", "alpha", "other"}, sent
    assert within(sent["alpha"], 3_000_000) and within(sent["other"], 1_000_000)
    connections = {s.labels["command"]: s.value for s in found["sockscope_process_connections"]}
    assert connections == {"sink": 3, "alpha": 1, "other": 2}
    labels = {s.labels["command"]: s.labels for s in found["sockscope_process_connections"]}
    assert labels["alpha"]["user"] == "root" and labels["alpha"]["netns"] == a.name
    assert labels["other"]["user"] == labels["other"]["netns"] == labels["other"]["container"] == ""
    assert all("pid" not in x for x in labels.values())
    pids = {s.labels["command"]: s.labels["pid"] for s in by_pid_found["sockscope_process_connections"]}
    assert pids["alpha"] == str(senders["alpha"].pid) and pids["beta"] == str(senders["beta"].pid)
    assert within(value(by_pid_found, "sockscope_process_tcp_sent_bytes",
                        "sockscope_process_tcp_sent_bytes_total", command="beta"), 1_000_000)


# UDP: a receiver named "udprecv" on 127.0.0.1:8091 and a sender named "udpsend"
# that sends sys.argv[1] datagrams of 1,000 bytes; each prints "ready".
UDP_RECEIVER = r"""
import socket, time
open("/proc/self/comm", "w").write("udprecv")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 8091))
print("ready", flush=True)
while True:
    s.recv(2048)
"""
UDP_SENDER = r"""
import socket, sys, time
open("/proc/self/comm", "w").write("udpsend")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.sendto(b"u" * 1000, ("127.0.0.1", 8091))
    time.sleep(0.001)
print("ready", flush=True)
time.sleep(300)
"""


def test_udp_bytes_per_process_with_the_flag(topology: Topology) -> None:
    a = namespace(topology)
    spawn_ready(topology, a, UDP_RECEIVER)
    with running("-N", a.name, "--udp") as exporter:
        exporter.scrape()
        spawn_ready(topology, a, UDP_SENDER, "200")

        def udp(command: str, direction: str) -> float | None:
            return value(exporter.metrics(), f"sockscope_process_udp_{direction}_bytes",
                         f"sockscope_process_udp_{direction}_bytes_total", command=command)

        wait_for(lambda: within(udp("udprecv", "received"), 200_000), timeout=20)
        assert within(udp("udpsend", "sent"), 200_000)
    with running("-N", a.name) as plain:
        assert "sockscope_process_udp_sent_bytes" not in plain.metrics()
