#!/usr/bin/env bash
# Install everything the tests need (Debian cross compilers and qemu-user included), then run the default suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m slow` for the slow tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
PYTHON="${PYTHON:-python3}"
# Lint and types first (seconds): rules and their reasons are in pyproject.toml ([tool.ruff], [tool.mypy]).
$PYTHON -m ruff check .
$PYTHON -m mypy
exec $PYTHON -m pytest -q -m "not slow" "$@"
