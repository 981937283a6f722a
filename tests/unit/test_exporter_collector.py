"""The exporter's pure parts: the kernel counter parsers, the cardinality folding,
the metric families over a snapshot made by hand, the listen address, and the
single-flight collection (#16)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from sockscope.errors import UsageError
from sockscope.exporter import DEFAULT_PORT, parse_listen
from sockscope.exporter.families import SnapshotCollector
from sockscope.exporter.fold import OTHER, Folding
from sockscope.exporter.kernel import NamespaceCounters, parse_limits, parse_netstat, parse_sockstat
from sockscope.exporter.snapshot import Listener, SharedCollection, Snapshot

# Recorded on the development machine (kernel 6.x), the first TcpExt/IpExt pairs shortened.
NETSTAT = """\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPTimeWaitOverflow
TcpExt: 0 0 17 19 0
IpExt: InNoRoutes InTruncatedPkts InOctets
IpExt: 0 0 1454660028
MPTcpExt: MPCapableSYNRX
MPTcpExt: 0 1
"""
SOCKSTAT = """\
sockets: used 22
TCP: inuse 1 orphan 3 tw 5 alloc 14 mem 219
UDP: inuse 0 mem 2
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
"""


def test_netstat_pairs_and_a_broken_pair_skipped() -> None:
    parsed = parse_netstat(NETSTAT)
    assert parsed["TcpExt"]["ListenOverflows"] == 17
    assert parsed["TcpExt"]["ListenDrops"] == 19
    assert parsed["IpExt"]["InOctets"] == 1454660028
    assert "MPTcpExt" not in parsed  # names and values of different lengths: not misread
    assert parse_netstat("") == {}
    assert parse_netstat("TcpExt: A B\nTcpExt: 1 x\n") == {}


def test_sockstat_and_limits() -> None:
    parsed = parse_sockstat(SOCKSTAT)
    assert parsed["TCP"] == {"inuse": 1, "orphan": 3, "tw": 5, "alloc": 14, "mem": 219}
    assert parsed["UDP"]["mem"] == 2
    assert parsed["FRAG"]["memory"] == 0
    assert parse_limits("287889\t383855\t575778\n") == (287889, 383855, 575778)
    assert parse_limits("1 2") is None
    assert parse_limits("a b c") is None


@dataclass
class Totals:
    """Shaped like sockscope.traffic.TrafficTotals."""

    command: str
    user: str | None = "root"
    netns: str = "default"
    container: str | None = None
    pid: int | None = None
    tcp_sent_bytes: int = 0
    tcp_received_bytes: int = 0
    tcp_retransmitted_segments: int = 0
    udp_sent_bytes: int = 0
    udp_received_bytes: int = 0
    connections: int = 0


def test_folding_keeps_the_busiest_and_adds_up_the_rest() -> None:
    folding = Folding(2)
    rows = folding.fold([Totals("a", tcp_sent_bytes=100), Totals("b", tcp_sent_bytes=300),
                         Totals("c", tcp_received_bytes=200, connections=2),
                         Totals("d", tcp_sent_bytes=5, connections=1)])
    by_command = {r.command: r for r in rows}
    assert set(by_command) == {"b", "c", OTHER}
    other = by_command[OTHER]
    assert (other.sent, other.received, other.connections) == (105, 0, 1)
    assert (other.user, other.netns, other.container, other.pid) == ("", "", "", "")
    assert folding.folded == 2


def test_folded_counters_never_go_backwards() -> None:
    """A process moving between the kept sets and the fold never makes a counter fall."""
    folding = Folding(1)
    seen: dict[tuple[str, ...], int] = {}
    a_sent = b_sent = 0
    for step in range(12):
        # a and b take turns being the busier one.
        a_sent += 1000 if step % 2 else 10
        b_sent += 10 if step % 2 else 1000
        rows = folding.fold([Totals("a", tcp_sent_bytes=a_sent), Totals("b", tcp_sent_bytes=b_sent)])
        assert len(rows) == 2
        for row in rows:
            key = row.key
            assert row.sent >= seen.get(key, 0), (step, row)
            seen[key] = row.sent
    other = seen[(OTHER, "", "", "", "")]
    assert other > 0


def test_udp_bytes_count_towards_the_busiest_and_fold_too() -> None:
    folding = Folding(1)
    rows = folding.fold([Totals("dns", udp_received_bytes=900, udp_sent_bytes=100),
                         Totals("web", tcp_sent_bytes=500)])
    assert rows[0].command == "dns"
    rows = folding.fold([Totals("dns", udp_received_bytes=2000, udp_sent_bytes=100),
                         Totals("web", tcp_sent_bytes=500, udp_sent_bytes=7)])
    other = rows[-1]
    assert (other.command, other.sent, other.udp_sent) == (OTHER, 500, 7)


def test_folding_ties_keep_what_is_already_exported() -> None:
    folding = Folding(1)
    assert [r.command for r in folding.fold([Totals("a"), Totals("b")])][:1] == ["a"]
    for _ in range(3):  # idle: "a" keeps its place whatever the order they come in
        assert folding.fold([Totals("b"), Totals("a")])[0].command == "a"


def test_a_process_whose_totals_restart_is_not_negative() -> None:
    folding = Folding(1)
    folding.fold([Totals("a", tcp_sent_bytes=50), Totals("b", tcp_sent_bytes=500)])
    rows = folding.fold([Totals("a", tcp_sent_bytes=5), Totals("b", tcp_sent_bytes=1000)])
    other = next(r for r in rows if r.command == OTHER)
    assert other.sent == 55  # a's 50, then a fresh 5 (dropped and made again by the sampler)


def test_folding_needs_a_positive_cap() -> None:
    with pytest.raises(ValueError):
        Folding(0)


def test_listen_addresses() -> None:
    assert parse_listen(f"127.0.0.1:{DEFAULT_PORT}") == ("127.0.0.1", DEFAULT_PORT)
    assert parse_listen("[::1]:9") == ("::1", 9)
    assert parse_listen(":0")[1] == 0
    for bad in ("127.0.0.1", "::1:80", "host:http", "1.2.3.4:70000", ""):
        with pytest.raises(UsageError):
            parse_listen(bad)


def _snapshot() -> Snapshot:
    snap = Snapshot(time.monotonic(), 0.25)
    snap.sockets = {("default", "tcp", "inet", "ESTABLISHED"): 7,
                    ('we"ird\\ns\n', "udp", "inet6", "UNCONN"): 1}
    snap.listeners = [Listener("default", "tcp", "0.0.0.0", 80, {"nginx", "nginx: worker"}, 3, 511),
                      Listener("default", "tcp", "::1", 8080, set(), 0, 128)]
    snap.namespaces = {"default": NamespaceCounters(4, 6, 2)}
    snap.orphans = {"default": 1}
    return snap


def _collector(snap: Snapshot, **kwargs: bool) -> tuple[SnapshotCollector, CollectorRegistry]:
    collector = SnapshotCollector(SharedCollection(lambda age: snap), **kwargs)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return collector, registry


def test_families_in_the_text_format_with_escaped_labels() -> None:
    snap = _snapshot()
    snap.processes = Folding(10).fold([Totals('py"thon\\\n', user=None, tcp_sent_bytes=9, connections=1),
                                       Totals("\udcff\udcfebad", tcp_received_bytes=4)])
    _, registry = _collector(snap, traffic=True)
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sockets = {tuple(s.labels[k] for k in ("netns", "proto", "family", "state")): s.value
               for s in families["sockscope_sockets"].samples}
    assert sockets[('we"ird\\ns\n', "udp", "inet6", "UNCONN")] == 1  # escaped, read back intact
    info = {(s.labels["port"], s.labels["command"]) for s in families["sockscope_listener_info"].samples}
    assert info == {("80", "nginx"), ("80", "nginx: worker"), ("8080", "")}
    queue = {s.labels["port"]: s.value for s in families["sockscope_listener_queue_length"].samples}
    assert queue == {"80": 3, "8080": 0}
    assert families["sockscope_listen_overflows"].type == "counter"
    assert [s.value for s in families["sockscope_listen_overflows"].samples] == [4]
    assert [s.value for s in families["sockscope_tcp_orphan_sockets"].samples] == [1]
    commands = {s.labels["command"] for s in families["sockscope_process_tcp_sent_bytes"].samples}
    assert commands == {'py"thon\\\n', "\ufffd\ufffdbad"}  # not UTF-8: replaced, never a crash
    assert all("pid" not in s.labels for s in families["sockscope_process_connections"].samples)
    assert "sockscope_process_udp_sent_bytes" not in families  # only with udp=True


def test_udp_families_with_udp() -> None:
    snap = _snapshot()
    snap.processes = Folding(10).fold([Totals("dns", udp_sent_bytes=12, udp_received_bytes=34)])
    _, registry = _collector(snap, traffic=True, udp=True)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert [s.value for s in families["sockscope_process_udp_sent_bytes"].samples] == [12]
    assert [s.value for s in families["sockscope_process_udp_received_bytes"].samples] == [34]


def test_openmetrics_output_parses_and_ends_with_eof() -> None:
    snap = _snapshot()
    snap.processes = Folding(10).fold([Totals("nginx", pid=12, tcp_sent_bytes=1)])
    _, registry = _collector(snap, traffic=True, per_pid=True)
    text = generate_openmetrics(registry).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["sockscope_process_tcp_sent_bytes"].type == "counter"
    assert families["sockscope_process_tcp_sent_bytes"].samples[0].labels["pid"] == "12"


def test_promtool_accepts_the_output(tmp_path: object) -> None:
    snap = _snapshot()
    snap.processes = Folding(10).fold([Totals("nginx", tcp_sent_bytes=1)])
    _, registry = _collector(snap, traffic=True)
    done = subprocess.run(["promtool", "check", "metrics"], input=generate_latest(registry),
                          capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_failed_collection_still_serves_the_exporters_own_metrics(
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(age: float) -> Snapshot:
        raise RuntimeError("boom")

    collector = SnapshotCollector(SharedCollection(broken))
    names = [m.name for m in collector.collect()]
    assert "sockscope_sockets" not in names
    assert "sockscope_exporter_scrape_errors" in names
    assert collector.errors == {"collection": 1}
    assert "collection failed: RuntimeError: boom" in capsys.readouterr().err


def scrape_together(scrape: Callable[[], None], n: int, gate: threading.Event) -> None:
    """``n`` threads call ``scrape`` while the collection waits for ``gate``; then it opens."""
    threads = [threading.Thread(target=scrape) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()


def test_concurrent_gets_share_one_collection_and_min_interval_caches() -> None:
    calls = 0
    gate = threading.Event()

    def slow(age: float) -> Snapshot:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return Snapshot(time.monotonic(), 0.0)

    shared = SharedCollection(slow)
    results: list[Snapshot] = []
    scrape_together(lambda: results.append(shared.get()), 8, gate)
    assert calls == 1 and len(results) == 8 and all(r is results[0] for r in results)
    shared.get()
    assert calls == 2  # min_interval 0: a later scrape collects again
    shared.min_interval = 60
    first = shared.get()
    assert shared.get() is first and calls == 2  # the last one, young enough: reused


def test_a_failure_reaches_every_waiting_scrape_and_the_next_one_retries() -> None:
    gate = threading.Event()
    attempts = 0

    def failing(age: float) -> Snapshot:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            gate.wait(5)
            raise OSError("gone")
        return Snapshot(time.monotonic(), 0.0)

    shared = SharedCollection(failing)
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            shared.get()
        except OSError as exc:
            errors.append(exc)

    scrape_together(scrape, 3, gate)
    assert len(errors) == 3
    assert shared.get() is not None and attempts == 2
