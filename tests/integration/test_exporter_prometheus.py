"""The exporter scraped by a real Prometheus server (Debian's prometheus package):
temporary configuration and data directory, scrape interval 1 s, loopback only,
inside the test's namespace; the expected series queried from its HTTP API (#16)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exporter_helpers import running, spawn_ready, wait_for

from topology import Topology

pytestmark = pytest.mark.needs_root

# In namespace "server": a listener on 198.51.100.1:8080 that accepts and reads;
# prints "ready".
SERVER = r"""
import socket, threading, time
lst = socket.create_server(("198.51.100.1", 8080))
def serve(conn):
    while conn.recv(65536):
        pass
print("ready", flush=True)
while True:
    conn, _ = lst.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""
# In namespace "client": N connections to the server, held; prints "ready".
CLIENT = r"""
import socket, sys, time
conns = [socket.create_connection(("198.51.100.1", 8080)) for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
time.sleep(300)
"""
# In namespace "client", named "pusher": sends sys.argv[1] bytes to the server, holds on.
PUSHER = r"""
import socket, sys, time
open("/proc/self/comm", "w").write("pusher")
s = socket.create_connection(("198.51.100.1", 8080))
s.sendall(b"x" * int(sys.argv[1]))
print("ready", flush=True)
time.sleep(300)
"""
SENT = 2_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(target: str) -> Iterator[str]:
    """A Prometheus server scraping ``target`` every second; yields its API's URL.
    Stopped, and its configuration and data removed, at the end."""
    with tempfile.TemporaryDirectory(prefix="ssc-prometheus-") as tmp:
        config = Path(tmp) / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: sockscope\n    static_configs:\n"
            f"      - targets: ['{target}']\n")
        port = free_port()
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _ready(url, proc), timeout=60)
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        _, err = proc.communicate()
        raise AssertionError(f"prometheus exited: {err.decode(errors='replace')[-2000:]}")
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def query(url: str, promql: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}",
                                timeout=10) as resp:
        reply = json.load(resp)
    assert reply["status"] == "success", reply
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


def test_prometheus_scrapes_listeners_and_connections(topology: Topology) -> None:
    server_ns, client_ns = topology.add_netns("server"), topology.add_netns("client")
    topology.add_veth(server_ns, client_ns, "198.51.100.1/24", "198.51.100.2/24")
    server = spawn_ready(topology, server_ns, SERVER)
    spawn_ready(topology, client_ns, CLIENT, "12")
    command = Path(f"/proc/{server.pid}/comm").read_text().strip()
    with running("-N", server_ns.name, "-N", client_ns.name) as exporter, \
            prometheus(f"{exporter.host}:{exporter.port}") as api:
        up = wait_for(lambda: query(api, 'up{job="sockscope"} == 1'), timeout=60)
        assert up[0]["metric"]["instance"] == f"{exporter.host}:{exporter.port}"
        listener = wait_for(lambda: query(
            api, f'sockscope_listener_info{{netns="{server_ns.name}", port="8080"}}'), timeout=30)
        assert [s["metric"]["command"] for s in listener] == [command]
        assert listener[0]["metric"]["address"] == "198.51.100.1"
        for ns in (server_ns.name, client_ns.name):
            established = query(api, f'sockscope_sockets{{netns="{ns}", proto="tcp", state="ESTABLISHED"}}')
            assert [float(s["value"][1]) for s in established] == [12.0], (ns, established)
        errors = query(api, "sum(sockscope_exporter_scrape_errors_total)")
        assert float(errors[0]["value"][1]) == 0
        # Series follow changes: a connection count that moves, seen through Prometheus.
        spawn_ready(topology, client_ns, CLIENT, "5")
        wait_for(lambda: [float(s["value"][1]) for s in query(
            api, f'sockscope_sockets{{netns="{client_ns.name}", proto="tcp", state="ESTABLISHED"}}')]
            == [17.0], timeout=30)
        # Bytes per process: what the pusher sent, and what the server received, within 2 %.
        spawn_ready(topology, client_ns, PUSHER, str(SENT))

        def moved(promql: str) -> float | None:
            found = query(api, promql)
            return float(found[0]["value"][1]) if len(found) == 1 else None

        pushed = f'sockscope_process_tcp_sent_bytes_total{{netns="{client_ns.name}", command="pusher"}}'
        received = (f'sockscope_process_tcp_received_bytes_total'
                    f'{{netns="{server_ns.name}", command="{command}"}}')
        wait_for(lambda: (moved(pushed) or 0) >= 0.98 * SENT and (moved(received) or 0) >= 0.98 * SENT,
                 timeout=30)
        assert abs((moved(pushed) or 0) - SENT) <= 0.02 * SENT
        assert abs((moved(received) or 0) - SENT) <= 0.02 * SENT
        connections = moved(f'sockscope_process_connections{{netns="{server_ns.name}", command="{command}"}}')
        assert connections == 18  # 12 + 5 + the pusher's
