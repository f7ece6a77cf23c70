#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages and the Python dev
# tools, in .venv), then run the whole suite: ruff, mypy --strict, pytest.
# Usage: scripts/test.sh [extra pytest args]
#   WRAITH_TEST_SKIP_INSTALL=1   skip apt/pip (for a quick re-run)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  openssh-client openssh-server curl
  microsocks dante-server tinyproxy
  fail2ban pebble
  procps iproute2
  nginx-light libnginx-mod-stream
  stunnel4
)

if [ "${WRAITH_TEST_SKIP_INSTALL:-0}" != "1" ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # Don't let the packages' own services start (fail2ban, tinyproxy, danted).
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    $SUDO rm -f /usr/sbin/policy-rc.d
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
  fi
  echo "== installing Python packages (pinned in pyproject.toml)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 \
    | grep -v "^WARNING: Location" || true
fi

. .venv/bin/activate
echo "== ruff check"
ruff check wraith tests fuzz bench
echo "== ruff format --check"
ruff format --check wraith tests fuzz bench
echo "== mypy --strict wraith"
mypy wraith
echo "== pytest"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
