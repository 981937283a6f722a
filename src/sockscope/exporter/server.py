"""The exporter's HTTP server: ``/metrics`` (text format or OpenMetrics, as the
scraper's Accept header asks, gzip when it accepts it) and ``/``, a short page.

A thread per connection, at most ``max_connections`` at once (more are closed at
accept), each with a socket timeout, so a client that connects and never sends,
or never reads, costs one thread for ``client_timeout`` seconds and then goes.
With TLS the handshake runs in that thread too, never in the accept loop. The
web configuration file is read again when it changes (new certificates, users),
as exporter-toolkit does; a change that does not parse keeps the previous one.
"""

from __future__ import annotations

import gzip
import html
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.registry import CollectorRegistry

from sockscope import __version__
from sockscope.errors import SockscopeError

from . import webconfig


class WebConfigSource:
    """The web configuration, read again when its file changes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self.current = webconfig.WebConfig()
        if path is not None:
            self._signature = self._stat()
            self.current = webconfig.load(path)  # errors at start-up end the program
        self.tls = self.current.ssl_context is not None

    def get(self) -> webconfig.WebConfig:
        if self.path is None:
            return self.current
        with self._lock:
            signature = self._stat()
            if signature != self._signature:
                self._signature = signature
                try:
                    fresh = webconfig.load(self.path)
                except SockscopeError as exc:
                    sys.stderr.write(f"sockscope exporter: keeping the previous web config: {exc}\n")
                else:
                    if (fresh.ssl_context is not None) != self.tls:
                        sys.stderr.write("sockscope exporter: keeping the previous web config: "
                                         "TLS cannot be switched on or off while running\n")
                    else:
                        self.current = fresh
            return self.current

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class MetricsServer(socketserver.ThreadingMixIn, HTTPServer):
    """Binds at construction (so a port in use is known at once); ``serve_forever``
    serves until ``shutdown``; ``server_close`` also ends open connections."""

    daemon_threads = True
    # server_close waits for the connections' threads itself, for a bounded time: a
    # thread in the middle of a collection (seconds, on a host with a million
    # sockets) must not hold up a SIGTERM.
    block_on_close = False
    close_wait = 2.0

    def __init__(self, host: str, port: int, registry: CollectorRegistry, web: WebConfigSource, *,
                 max_connections: int = 64, client_timeout: float = 10.0) -> None:
        self.address_family = _family(host)
        self.registry = registry
        self.web = web
        self.client_timeout = client_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._threads_open: set[threading.Thread] = set()
        self._open_lock = threading.Lock()
        super().__init__((host, port), MetricsHandler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # [::] means IPv6 only here, as written; 0.0.0.0 is the IPv4 wildcard.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.web.tls else 'http'}://{shown}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: the newest waits for no one
            return
        with self._open_lock:
            self._open.add(request)
        try:
            thread = threading.Thread(target=self.process_request_thread, args=(request, client_address),
                                      daemon=True)
            with self._open_lock:
                self._threads_open.add(thread)
            thread.start()
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)
            with self._open_lock:
                self._threads_open.discard(threading.current_thread())

    def _release(self, request: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(request)
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError | ssl.SSLError | TimeoutError):
            return  # a client that went away, timed out or failed its handshake
        sys.stderr.write(f"sockscope exporter: error serving {client_address[0]}: "
                         f"{type(exc).__name__}: {exc}\n")

    def server_close(self) -> None:
        """Stop listening, end every open connection, and wait for their threads
        at most ``close_wait`` seconds (daemon threads: the process can exit)."""
        super().server_close()
        with self._open_lock:
            for conn in list(self._open):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads_open)
        deadline = time.monotonic() + self.close_wait
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


_ROOT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>sockscope exporter</title></head>
<body>
<h1>sockscope exporter</h1>
<p>Sockets, listeners and per-process traffic of this host, for Prometheus.</p>
<p><a href="metrics">Metrics</a></p>
<p>sockscope {version}</p>
</body>
</html>
"""


class MetricsHandler(BaseHTTPRequestHandler):
    server: MetricsServer
    protocol_version = "HTTP/1.1"
    server_version = f"sockscope-exporter/{__version__}"

    def setup(self) -> None:
        # Before the handshake: a client that never sends or never reads times out.
        self.request.settimeout(self.server.client_timeout)
        web = self.server.web.get()
        if web.ssl_context is not None:
            self.request = web.ssl_context.wrap_socket(self.request, server_side=True)
            if not web.sans_allowed(self.request.getpeercert()):
                raise ssl.SSLError("client certificate not allowed by client_allowed_sans")
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing per request (a scrape a second would fill the journal)."""

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        web = self.server.web.get()
        if web.rate_limit is not None and not web.rate_limit.allow():
            self._reply(429, "text/plain; charset=utf-8", b"Too Many Requests\n", web.headers, head)
            return
        if not web.authorized(self.headers.get("Authorization")):
            self._reply(401, "text/plain; charset=utf-8", b"Unauthorized\n",
                        {**web.headers, "WWW-Authenticate": 'Basic realm="sockscope exporter"'}, head)
            return
        url = urlsplit(self.path)
        if url.path == "/metrics":
            body, content_type, extra = self._metrics(url.query)
            self._reply(200, content_type, body, {**web.headers, **extra}, head)
        elif url.path == "/":
            page = _ROOT_PAGE.format(version=html.escape(__version__)).encode()
            self._reply(200, "text/html; charset=utf-8", page, web.headers, head)
        else:
            self._reply(404, "text/plain; charset=utf-8", b"Not Found: try /metrics\n", web.headers, head)

    def _metrics(self, query: str) -> tuple[bytes, str, dict[str, str]]:
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        except (TypeError, ValueError):
            # prometheus-client cannot compare a version it cannot parse
            # ("version=abc"): answer in the classic text format, as for no header.
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        registry: Any = self.server.registry
        names = parse_qs(query).get("name[]")
        if names:
            registry = registry.restricted_registry(names)
        body = encoder(registry)
        extra: dict[str, str] = {}
        if _gzip_accepted(self.headers.get("Accept-Encoding", "")):
            body = gzip.compress(body, compresslevel=6)
            extra["Content-Encoding"] = "gzip"
        return body, content_type, extra

    def _reply(self, status: int, content_type: str, body: bytes, headers: dict[str, str],
               head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            if value:
                self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _gzip_accepted(header: str) -> bool:
    for part in header.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
