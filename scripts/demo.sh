#!/usr/bin/env bash
# Install Wraith into .venv and run the end-to-end demo on loopback.
# Usage: scripts/demo.sh [--once] [--backend trio|asyncio]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e . 2>&1 \
  | grep -v "^WARNING: Location" || true
exec .venv/bin/wraith demo "$@"
