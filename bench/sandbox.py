"""Benchmarks that send traffic run where no packet can leave the host.

`enter()` re-executes the running benchmark inside a network namespace made for it
(scripts/sandbox-netns.sh: loopback only, no route off the host), as the test suite
runs. The topologies a benchmark builds (tests/topology.py) live inside it as they
would anywhere else, and the namespace is removed when the benchmark ends.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sandbox-netns.sh"


def enter() -> None:
    """Re-execute this program inside the sandbox namespace, unless it runs there."""
    if os.environ.get("SOCKSCOPE_SANDBOX_NETNS"):
        return
    if os.geteuid() != 0:
        sys.exit(f"{Path(sys.argv[0]).name}: run as root (it builds network namespaces)")
    sys.stdout.flush()
    os.execv("/bin/bash", ["bash", str(SCRIPT), sys.executable, *sys.orig_argv[1:]])
