"""Suite-wide test rules and the `topology` fixture.

- ``topology``: a fresh `Topology` (tests/topology.py) per test, always torn down.
- ``@pytest.mark.needs_root``: skip unless running as root.
- CI rule: with ``CI=true`` (or ``1``) in the environment every skip, including
  skips at collection and in fixtures, is turned into a failure reading
  "skipped in CI: <reason>", so CI cannot go green while silently testing less.
  xfail is left alone: it is an expected failure, not missing coverage.
- At session start, namespaces left behind by killed earlier runs are removed.
- The sandbox: run as root, pytest always runs inside a network namespace made for
  the run (scripts/sandbox-netns.sh: loopback only, no route off the host). The
  README's test command starts it there; a plain ``pytest`` re-executes itself
  there at start-up. A test that forgets to enter its own topology therefore gets
  "Network is unreachable" instead of sending a packet off the host
  (tests/integration/test_sandbox.py holds this).
- Resources are counted (tests/resources.py): around every test the process's
  descriptors, child processes, threads, the network namespaces it may have made
  and the nftables ruleset are recorded, and anything left behind fails the test
  that left it (a teardown error naming what leaked).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Make `from topology import Topology` work from any test, whatever --import-mode.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from resources import Snapshot, leaks_after  # noqa: E402
from topology import Topology, cleanup_stale  # noqa: E402

pytest_plugins = ["pytester"]

RULES_PLUGIN_NAME = "sockscope-test-rules"
SANDBOX_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sandbox-netns.sh"
SANDBOX_ENV = "SOCKSCOPE_SANDBOX_NETNS"


def ci_enabled() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def _skip_reason(longrepr: Any) -> str:
    # Skip reports carry (path, lineno, "Skipped: <reason>").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


class SuiteRules:
    """The needs_root marker and the CI skip rule, as one plugin object.

    A class rather than bare conftest hooks so the harness tests can hand the very
    same object to an inner pytester run (``plugins=[...]``) instead of copying it.
    """

    def pytest_configure(self, config: pytest.Config) -> None:
        config.addinivalue_line("markers", "needs_root: skip unless running as root (uid 0)")

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        return "CI mode: skipped tests count as failures" if ci_enabled() else None

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.get_closest_marker("needs_root") is not None and os.geteuid() != 0:
            pytest.skip("needs root")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if ci_enabled() and report.skipped and not hasattr(report, "wasxfail"):
            report.outcome = "failed"
            report.longrepr = f"skipped in CI: {_skip_reason(report.longrepr)}"
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        # Module-level pytest.skip()/importorskip() never reach runtest_makereport.
        report = yield
        if ci_enabled() and report.skipped:
            report.outcome = "failed"
            report.longrepr = f"skipped in CI: {_skip_reason(report.longrepr)}"
        return report


def pytest_configure(config: pytest.Config) -> None:
    _enter_sandbox(config)
    if not config.pluginmanager.has_plugin(RULES_PLUGIN_NAME):
        config.pluginmanager.register(SuiteRules(), RULES_PLUGIN_NAME)


def _enter_sandbox(config: pytest.Config) -> None:
    """Re-execute this pytest run inside a network namespace of its own, unless it
    already runs in one or cannot make one (not root, no iproute2)."""
    if os.environ.get(SANDBOX_ENV) or os.geteuid() != 0 or shutil.which("ip") is None:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # give the real stdout/stderr back before exec
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv("/bin/bash", ["bash", str(SANDBOX_SCRIPT), sys.executable, *sys.orig_argv[1:]])


def _netns_capable() -> str | None:
    """Why namespaces cannot be built here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "ip (iproute2) not installed"
    return None


def pytest_sessionstart(session: pytest.Session) -> None:
    if _netns_capable() is None:
        removed = cleanup_stale()
        if removed:
            print(f"removed stale test namespaces/links: {' '.join(removed)}", file=sys.stderr)


@pytest.fixture(autouse=True)
def _counted_resources() -> Iterator[None]:
    """Fail the test that leaves a descriptor, child, thread, namespace or
    nftables change behind (see tests/resources.py)."""
    before = Snapshot.take()
    yield
    leaked = leaks_after(before)
    if leaked:
        pytest.fail("left behind:\n  " + "\n  ".join(leaked), pytrace=False)


@pytest.fixture
def topology() -> Iterator[Topology]:
    """A Topology for this test; everything it made is removed afterwards."""
    why_not = _netns_capable()
    if why_not:
        pytest.skip(why_not)
    topo = Topology()
    try:
        yield topo
    finally:
        # strict: a leak after a passing test is reported as a teardown error;
        # after a failing test pytest shows both, so nothing is masked.
        topo.close(strict=True)
