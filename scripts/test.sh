#!/usr/bin/env bash
# Set up everything the tests need (Debian packages, .venv) and run the whole
# suite: ruff, mypy, then pytest. Run as root on Debian 12; CI runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
