"""The deploy files (deploy/): alerting rules checked and unit-tested by promtool,
the scrape configuration valid, the Grafana dashboard and the rules using only
metrics the exporter exports, the systemd unit accepted by systemd (#16)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from sockscope.exporter.families import SnapshotCollector
from sockscope.exporter.snapshot import SharedCollection, Snapshot

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
METRIC = re.compile(r"\b(sockscope_[a-z0-9_]+)\b")


def exported_names() -> set[str]:
    """Every sample name the exporter can export (all options on): families, and
    counters with their ``_total``."""
    collector = SnapshotCollector(SharedCollection(lambda age: Snapshot(0.0, 0.0)), per_pid=True,
                                  traffic=True, interfaces=True)
    names: set[str] = set()
    for family in collector.describe():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    return names


def dashboard_queries() -> list[str]:
    board = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queries = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            queries.append(query["query"])
    return queries


def test_promtool_checks_and_unit_tests_the_alerting_rules() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                 ["check", "config", "prometheus.yml"]):
        done = subprocess.run(["promtool", *args], cwd=DEPLOY, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    exported = exported_names()
    assert "sockscope_listen_overflows_total" in exported and "sockscope_sockets" in exported
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    rule_exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    queries = dashboard_queries()
    assert len(queries) >= 10
    for expr in rule_exprs + queries:
        used = set(METRIC.findall(expr))
        assert used, expr
        assert used <= exported, f"not exported: {sorted(used - exported)} in {expr!r}"
    # Every family a dashboard user would look for is on it.
    on_board = {name for q in queries for name in METRIC.findall(q)}
    for wanted in ("sockscope_sockets", "sockscope_listener_info", "sockscope_listen_overflows_total",
                   "sockscope_process_tcp_sent_bytes_total", "sockscope_process_connections",
                   "sockscope_tcp_time_wait_sockets", "sockscope_socket_memory_bytes",
                   "sockscope_exporter_scrape_duration_seconds"):
        assert wanted in on_board, wanted


def test_the_dashboards_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query, Grafana's variables filled in, as a recording rule: promtool parses it
    (a variable's ``label_values(SELECTOR, label)`` is Grafana's: its selector is checked)."""
    filled = [re.sub(r"^label_values\((.*), *\w+\)$", r"\1", q)
              .replace("$__rate_interval", "5m").replace("$instance", ".*").replace("$netns", ".*")
              for q in dashboard_queries()]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{n}", "expr": q} for n, q in enumerate(filled)]}]}
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(rules))
    done = subprocess.run(["promtool", "check", "rules", "dashboard.yml"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_fails_the_check(tmp_path: Path) -> None:
    """The checks above can fail: promtool refuses a rule that does not parse."""
    (tmp_path / "bad.yml").write_text(
        "groups:\n- name: x\n  rules:\n  - alert: X\n    expr: rate(sockscope_sockets[5m]\n")
    done = subprocess.run(["promtool", "check", "rules", "bad.yml"], cwd=tmp_path, capture_output=True)
    assert done.returncode != 0


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointing at this checkout's program."""
    unit = (DEPLOY / "sockscope-exporter.service").read_text()
    program = Path(sys.executable).parent / "sockscope"
    assert "ExecStart=/opt/sockscope/.venv/bin/sockscope exporter" in unit
    assert "User=root" not in unit and "DynamicUser=yes" in unit
    for cap in ("CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"):
        assert re.search(rf"^AmbientCapabilities=.*{cap}", unit, re.M), cap
    (tmp_path / "sockscope-exporter.service").write_text(
        unit.replace("/opt/sockscope/.venv/bin/sockscope", str(program)))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                           str(tmp_path / "sockscope-exporter.service")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sockscope-exporter.service" not in done.stderr, done.stderr  # no complaint about the unit
