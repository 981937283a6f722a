"""Running ``sockscope exporter`` as a real process and scraping it (#16)."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

CLI = [sys.executable, "-m", "sockscope"]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str  # http://127.0.0.1:PORT
    host: str
    port: int

    def scrape(self, path: str = "/metrics", headers: dict[str, str] | None = None,
               context: ssl.SSLContext | None = None, timeout: float = 30) -> Reply:
        return request(self.host, self.port, path, headers, context, timeout)

    def metrics(self) -> dict[str, list[Any]]:
        reply = self.scrape()
        assert reply.status == 200, reply
        return samples(reply.text)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def request(host: str, port: int, path: str = "/metrics", headers: dict[str, str] | None = None,
            context: ssl.SSLContext | None = None, timeout: float = 30) -> Reply:
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def samples(text: str) -> dict[str, list[Any]]:
    """Family name -> its samples (each with .name, .labels, .value)."""
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def value(found: dict[str, list[Any]], metric: str, sample: str | None = None, /,
          **labels: str) -> float | None:
    """The value of the one sample of ``metric`` (a family) whose labels include ``labels``."""
    matches = [s.value for s in found.get(metric, [])
               if (sample is None or s.name == sample)
               and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) <= 1, (metric, labels, matches)
    return matches[0] if matches else None


def start(*args: str, preexec_fn: Callable[[], None] | None = None,
          env: dict[str, str] | None = None, timeout: float = 120) -> Running:
    """Start the exporter on an ephemeral loopback port; returns once it listens
    (watching every namespace of a busy shared host, the traffic accounting's
    baseline can take many seconds)."""
    proc = subprocess.Popen([*CLI, "exporter", "--listen", "127.0.0.1:0", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec_fn,
                            env=env, start_new_session=True)
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], timeout)
    line = proc.stderr.readline().decode() if ready else ""
    found = re.search(r"listening on (https?)://([\d.]+):(\d+)/metrics", line)
    if not found:
        stop(proc)
        raise AssertionError(f"the exporter did not start: {line!r}")
    return Running(proc, f"{found.group(1)}://{found.group(2)}:{found.group(3)}", found.group(2),
                   int(found.group(3)))


def stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """SIGTERM, then the exit status and what it wrote on stderr."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError("the exporter did not end within 15 s of SIGTERM") from None
    return proc.returncode, (err or b"").decode(errors="replace")


@contextlib.contextmanager
def running(*args: str, **kwargs: Any) -> Iterator[Running]:
    exporter = start(*args, **kwargs)
    try:
        yield exporter
    finally:
        status, err = stop(exporter.proc)
        assert "Traceback" not in err, err
        assert status == 128 + signal.SIGTERM, (status, err)


def wait_for(check: Callable[[], Any], timeout: float = 15, every: float = 0.2) -> Any:
    """Call ``check`` until it returns something true; that value (or an AssertionError)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"not reached within {timeout} s (last: {last!r})")


def spawn_ready(topo: Any, ns: Any, script: str, *args: str) -> subprocess.Popen[Any]:
    """A Python script in a topology namespace, once it has printed "ready"."""
    proc: subprocess.Popen[Any] = topo.spawn(ns, sys.executable, "-c", script, *args)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready and proc.stdout.readline().strip() == "ready"
    return proc
