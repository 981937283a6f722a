#!/usr/bin/env bash
# Set up everything the tests need (Debian packages, .venv) and run the whole
# suite: ruff, mypy, then pytest. Run as root on Debian 12; CI runs this.
# pytest runs inside a network namespace made for the run (scripts/sandbox-netns.sh):
# loopback only, no route off the host, so no test can send a packet anywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec bash scripts/sandbox-netns.sh .venv/bin/python -m pytest "$@"
