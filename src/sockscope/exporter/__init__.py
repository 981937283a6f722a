"""``sockscope exporter``: the host's sockets, listeners and per-process traffic
for Prometheus (issue 16).

    with Exporter("127.0.0.1:13574") as exporter:
        exporter.serve_forever()

Built on prometheus-client (``pip install sockscope[exporter]``): a custom
collector (families.py) over one shared collection per scrape (snapshot.py),
served by a small threaded HTTP server (server.py) configured by an
exporter-toolkit web config file (webconfig.py). Only this package imports
prometheus-client, PyYAML and bcrypt.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from sockscope.errors import PermissionNeeded, SockscopeError, UsageError

if TYPE_CHECKING:
    from .snapshot import Snapshot, TrafficSource

# Prometheus's list of default ports (its wiki's "Default port allocations") has
# had every port of the exporters' range 9100-9999 taken since 2023, and new
# allocations continue above 10000; 13574 is clear of both and below Linux's
# ephemeral range (32768-60999), so no outgoing connection holds it at start-up.
DEFAULT_PORT = 13574
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_MAX_SERIES = 200


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (every address) -> (host, port)."""
    if not isinstance(text, str):
        raise UsageError(f"listen address: expected HOST:PORT, got {text!r}")
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"listen address {text!r}: expected HOST:PORT (e.g. {DEFAULT_LISTEN})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"listen address {text!r}: put an IPv6 address in brackets, [::1]:PORT")
    if host == "":
        host = "::" if socket.has_ipv6 else "0.0.0.0"
    return host, int(port_text)


class Exporter:
    """The exporter: the HTTP server bound at construction, collections made per
    scrape. Raises SockscopeError (one line for a user) for a port in use, an
    address that is not here, a port that needs privilege, a bad web config.

    ``netns``: the namespaces to watch (None: every one on the host). ``pids``:
    a ``pid`` label on per-process series. ``max_series``: per-process label
    sets exported (the rest fold into ``command="other"``). ``min_interval``:
    seconds a collection is reused. ``interfaces``: interface counters too.
    ``traffic``: the per-process traffic source (a ``sockscope.traffic.Sampler``),
    None for no per-process series; ``udp``: its UDP byte counters are exported
    (a sampler whose source counts UDP: ``source="bpf"``).
    """

    def __init__(self, listen: str = DEFAULT_LISTEN, *, netns: Sequence[str] | None = None,
                 pids: bool = False, max_series: int = DEFAULT_MAX_SERIES, min_interval: float = 0.0,
                 interfaces: bool = False, web_config_file: str | None = None,
                 traffic: TrafficSource | None = None, udp: bool = False, client_timeout: float = 10.0,
                 max_connections: int = 64) -> None:
        from prometheus_client.process_collector import ProcessCollector
        from prometheus_client.registry import CollectorRegistry

        from .families import SnapshotCollector
        from .fold import Folding
        from .listeners import ListenerOwners
        from .server import MetricsServer, WebConfigSource
        from .snapshot import CollectOptions, SharedCollection, collect

        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise UsageError(f"max_series: expected a whole number >= 1, got {max_series!r}")
        if not isinstance(min_interval, int | float) or not 0 <= min_interval < 86400:
            raise UsageError(f"min_interval: expected seconds >= 0, got {min_interval!r}")
        host, port = parse_listen(listen)
        web = WebConfigSource(web_config_file)
        options = CollectOptions(list(netns) if netns is not None else None, interfaces)
        folding = Folding(max_series)
        owners = ListenerOwners()

        def make(max_age: float) -> Snapshot:
            return collect(options, traffic, folding, owners, max_age)

        self.shared = SharedCollection(make, min_interval)
        self.collector = SnapshotCollector(self.shared, per_pid=pids, traffic=traffic is not None,
                                           udp=udp and traffic is not None, interfaces=interfaces)
        self.shared.after = self.collector.count_errors
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(namespace="", registry=self.registry)
        try:
            self.server = MetricsServer(host, port, self.registry, web, max_connections=max_connections,
                                        client_timeout=client_timeout)
        except OSError as exc:
            raise _bind_error(exc, host, port) from None

    @property
    def url(self) -> str:
        """``http(s)://HOST:PORT`` as bound (the real port when 0 was asked for)."""
        return self.server.url

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.5)

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread)."""
        self.server.shutdown()

    def close(self) -> None:
        self.server.server_close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _bind_error(exc: OSError, host: str, port: int) -> SockscopeError:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return SockscopeError(f"cannot listen on {where}: address already in use")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionNeeded(f"cannot listen on {where}: permission denied "
                                "(ports below 1024 need root or CAP_NET_BIND_SERVICE)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return SockscopeError(f"cannot listen on {where}: no such address on this host")
    if isinstance(exc, socket.gaierror):
        return UsageError(f"cannot listen on {where}: {exc.strerror}")
    return SockscopeError(f"cannot listen on {where}: {exc.strerror or exc}")
