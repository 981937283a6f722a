"""The prometheus-client collector: one ``Snapshot`` turned into metric families.

The exposition (text format, OpenMetrics, escaping of label values) is
prometheus-client's; this module only says which families and samples there are.
Names, types and labels are documented in the README ("sockscope exporter"):
renaming one breaks dashboards and rules, so names are only ever added.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sockscope import __version__

from .fold import ProcessRow
from .snapshot import SharedCollection, Snapshot

PREFIX = "sockscope_"
SOCKET_LABELS = ("netns", "proto", "family", "state")
LISTENER_LABELS = ("netns", "proto", "address", "port")
PROCESS_LABELS = ("command", "user", "netns", "container")
INTERFACE_LABELS = ("netns", "interface")

# Interface counters: (metric name part, Interface attribute, help).
INTERFACE_COUNTERS = (
    ("receive_bytes", "rx_bytes", "Bytes received by the interface."),
    ("receive_packets", "rx_packets", "Packets received by the interface."),
    ("receive_errors", "rx_errors", "Receive errors of the interface."),
    ("receive_drops", "rx_dropped", "Received packets the interface dropped."),
    ("transmit_bytes", "tx_bytes", "Bytes sent by the interface."),
    ("transmit_packets", "tx_packets", "Packets sent by the interface."),
    ("transmit_errors", "tx_errors", "Transmit errors of the interface."),
    ("transmit_drops", "tx_dropped", "Packets to send the interface dropped."),
)


def label(value: object) -> str:
    """A label value as valid UTF-8: prometheus-client escapes backslashes,
    quotes and newlines itself, but cannot encode lone surrogates (bytes of a
    process name that were not UTF-8)."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


class SnapshotCollector(Collector):
    """Yields the families of the snapshot ``shared`` hands out for this scrape."""

    def __init__(self, shared: SharedCollection, *, per_pid: bool = False,
                 traffic: bool = True, udp: bool = False, interfaces: bool = False) -> None:
        self.shared = shared
        self.per_pid = per_pid
        self.traffic = traffic
        self.udp = udp
        self.interfaces = interfaces
        self.errors: dict[str, int] = {}  # part -> collections in which it failed

    def count_errors(self, snap: Snapshot) -> None:
        """Called once per collection (SharedCollection's ``after``)."""
        for part in set(snap.errors):
            self.errors[part] = self.errors.get(part, 0) + 1

    def describe(self) -> Iterable[Metric]:
        """Every family, without samples: the registry learns the names (for
        ``?name[]=`` and to refuse a clash) without a collection."""
        return list(self.families(Snapshot(0.0, 0.0)))

    def collect(self) -> Iterator[Metric]:
        try:
            snap: Snapshot | None = self.shared.get()
        except Exception as exc:  # a defect: keep serving the exporter's own metrics
            sys.stderr.write(f"sockscope exporter: collection failed: {type(exc).__name__}: {exc}\n")
            self.errors["collection"] = self.errors.get("collection", 0) + 1
            snap = None
        if snap is None:
            yield from self.own_families(None)
        else:
            yield from self.families(snap)

    def families(self, snap: Snapshot) -> Iterator[Metric]:
        yield from self.socket_families(snap)
        yield from self.kernel_families(snap)
        if self.traffic:
            yield from self.process_families(snap.processes)
        if self.interfaces:
            yield from self.interface_families(snap)
        yield from self.own_families(snap)

    def socket_families(self, snap: Snapshot) -> Iterator[Metric]:
        sockets = GaugeMetricFamily(PREFIX + "sockets", "Sockets by namespace, protocol, family and state.",
                                    labels=SOCKET_LABELS)
        for key, count in sorted(snap.sockets.items()):
            sockets.add_metric([label(v) for v in key], count)
        yield sockets
        info = GaugeMetricFamily(PREFIX + "listener_info",
                                 "A listening TCP socket and the command of each process holding it "
                                 "(value 1; command empty when no process could be seen).",
                                 labels=(*LISTENER_LABELS, "command"))
        queue = GaugeMetricFamily(PREFIX + "listener_queue_length",
                                  "Connections waiting in the listener's accept queue.",
                                  labels=LISTENER_LABELS)
        backlog = GaugeMetricFamily(PREFIX + "listener_backlog",
                                    "The listener's accept queue limit (listen() backlog).",
                                    labels=LISTENER_LABELS)
        for lst in sorted(snap.listeners, key=lambda x: (x.netns, x.address, x.port)):
            labels = [label(lst.netns), lst.proto, label(lst.address), str(lst.port)]
            for command in sorted(lst.commands) or [""]:
                info.add_metric([*labels, label(command)], 1)
            queue.add_metric(labels, lst.queue_length)
            backlog.add_metric(labels, lst.backlog)
        yield info
        yield queue
        yield backlog

    def kernel_families(self, snap: Snapshot) -> Iterator[Metric]:
        overflows = CounterMetricFamily(PREFIX + "listen_overflows",
                                        "Times a listener's accept queue was full (TcpExt ListenOverflows).",
                                        labels=("netns",))
        drops = CounterMetricFamily(PREFIX + "listen_drops",
                                    "Connection requests to listeners dropped (TcpExt ListenDrops).",
                                    labels=("netns",))
        time_wait = GaugeMetricFamily(PREFIX + "tcp_time_wait_sockets",
                                      "TCP sockets in TIME_WAIT (the kernel's count).", labels=("netns",))
        for netns, counters in sorted(snap.namespaces.items()):
            overflows.add_metric([label(netns)], counters.listen_overflows)
            drops.add_metric([label(netns)], counters.listen_drops)
            time_wait.add_metric([label(netns)], counters.time_wait)
        yield overflows
        yield drops
        yield time_wait
        orphans = GaugeMetricFamily(PREFIX + "tcp_orphan_sockets",
                                    "TCP sockets closed by their process, still finishing their close.",
                                    labels=("netns",))
        for netns in sorted(snap.namespaces.keys() | snap.orphans.keys()):
            orphans.add_metric([label(netns)], snap.orphans.get(netns, 0))
        yield orphans
        used = GaugeMetricFamily(PREFIX + "socket_memory_bytes",
                                 "Memory the host's sockets use, as the kernel accounts it "
                                 "against tcp_mem / udp_mem (host-wide).", labels=("proto",))
        limits = GaugeMetricFamily(PREFIX + "socket_memory_limit_bytes",
                                   "The kernel's socket memory thresholds (tcp_mem / udp_mem): "
                                   "min, pressure, max.", labels=("proto", "level"))
        if snap.memory is not None:
            for proto, value in sorted(snap.memory.used.items()):
                used.add_metric([proto], value)
            for proto, (low, pressure, high) in sorted(snap.memory.limits.items()):
                limits.add_metric([proto, "min"], low)
                limits.add_metric([proto, "pressure"], pressure)
                limits.add_metric([proto, "max"], high)
        yield used
        yield limits

    def process_families(self, rows: list[ProcessRow]) -> Iterator[Metric]:
        labels = (*PROCESS_LABELS, "pid") if self.per_pid else PROCESS_LABELS
        connections = GaugeMetricFamily(PREFIX + "process_connections",
                                        "TCP connections (not listeners) and UDP sockets the processes hold.",
                                        labels=labels)
        sent = CounterMetricFamily(PREFIX + "process_tcp_sent_bytes",
                                   "TCP payload bytes the processes sent (retransmissions not counted).",
                                   labels=labels)
        received = CounterMetricFamily(PREFIX + "process_tcp_received_bytes",
                                       "TCP payload bytes the processes received.", labels=labels)
        retransmitted = CounterMetricFamily(PREFIX + "process_tcp_retransmitted_segments",
                                            "TCP segments the processes' connections retransmitted.",
                                            labels=labels)
        udp_sent = CounterMetricFamily(PREFIX + "process_udp_sent_bytes",
                                       "UDP payload bytes the processes sent (with --udp).", labels=labels)
        udp_received = CounterMetricFamily(PREFIX + "process_udp_received_bytes",
                                           "UDP payload bytes the processes received (with --udp).",
                                           labels=labels)
        for row in rows:
            values = [label(row.command), label(row.user), label(row.netns), label(row.container)]
            if self.per_pid:
                values.append(row.pid)
            connections.add_metric(values, row.connections)
            sent.add_metric(values, row.sent)
            received.add_metric(values, row.received)
            retransmitted.add_metric(values, row.retransmitted)
            udp_sent.add_metric(values, row.udp_sent)
            udp_received.add_metric(values, row.udp_received)
        yield connections
        yield sent
        yield received
        yield retransmitted
        if self.udp:
            yield udp_sent
            yield udp_received

    def interface_families(self, snap: Snapshot) -> Iterator[Metric]:
        for name, attribute, text in INTERFACE_COUNTERS:
            family = CounterMetricFamily(f"{PREFIX}interface_{name}", text, labels=INTERFACE_LABELS)
            for iface in snap.interfaces:
                family.add_metric([label(iface.netns), label(iface.name)], getattr(iface, attribute))
            yield family

    def own_families(self, snap: Snapshot | None) -> Iterator[Metric]:
        info = GaugeMetricFamily(PREFIX + "exporter_build_info", "The exporter's version (value 1).",
                                 labels=("version",))
        info.add_metric([__version__], 1)
        yield info
        duration = GaugeMetricFamily(PREFIX + "exporter_scrape_duration_seconds",
                                     "Seconds the collection behind this scrape took.")
        if snap is not None:
            duration.add_metric([], snap.duration)
        yield duration
        yield CounterMetricFamily(PREFIX + "exporter_collections",
                                  "Collections made (concurrent and cached scrapes share one).",
                                  value=self.shared.collections)
        errors = CounterMetricFamily(PREFIX + "exporter_scrape_errors",
                                     "Collections in which a part failed (inventory, kernel, netns, "
                                     "interfaces, traffic, collection); the rest was still exported.",
                                     labels=("part",))
        for part in ("inventory", "kernel", "netns", "interfaces", "traffic", "collection"):
            errors.add_metric([part], self.errors.get(part, 0))
        yield errors
