#!/usr/bin/env bash
# Ark: idempotent set-up of a fresh Debian 12 machine for development, tests and the demo.
#
#   deploy/bootstrap.sh            # from anywhere; works on the repository this script lives in
#
# 1. apt: postgresql (15) + postgresql-contrib, mariadb-server (10.11; no service is started), openjdk-17-jre-headless, maven, rsync, iproute2, acl, attr,
#    python3-venv. `apt-get update` runs once, and only when something is missing.
# 2. The repo-local venv .venv, with `pip install -e '.[all]'` only when pyproject.toml changed
#    (a stamp file in .venv remembers its hash).
# 3. The Kafka broker jars, fetched once from Maven Central into ${ARK_CACHE:-~/.cache/ark}.
#
# Safe to run twice: each step checks first and says "ok" when there is nothing to do.
# Environment: PYTHON (default python3), ARK_CACHE, ARK_SKIP_APT=1 (skip step 1).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.ark-pyproject.sha256"
# chromium (headless) renders 'ark report --html' to a PNG in a test (tests/integration/test_report_live.py).
APT_PACKAGES=(postgresql postgresql-contrib mariadb-server mariadb-client openjdk-17-jre-headless maven rsync iproute2
              iputils-arping python3-venv acl attr chromium fonts-liberation)

step() { printf '[bootstrap] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# -- 1. system packages --------------------------------------------------------------------------
if [ "${ARK_SKIP_APT:-0}" = "1" ]; then
  step "apt: skipped (ARK_SKIP_APT=1)"
else
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    step "apt: ok, all of ${APT_PACKAGES[*]} installed"
  else
    step "apt: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi
if [ -x /usr/lib/postgresql/15/bin/initdb ]; then
  step "postgresql: ok, 15 binaries in /usr/lib/postgresql/15/bin"
else
  step "postgresql: ERROR /usr/lib/postgresql/15/bin/initdb missing (Debian 12 ships PostgreSQL 15)"
  exit 1
fi
java_version="$(java -version 2>&1 | head -1)"
step "java: ok, $java_version"

# -- 2. Python venv ------------------------------------------------------------------------------
if [ -x "$VENV/bin/python" ]; then
  step "venv: ok, $VENV exists"
else
  step "venv: creating $VENV with $("$PYTHON" --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" = "$have" ]; then
  step "pip: ok, pyproject.toml unchanged since the last install"
else
  step "pip: installing -e '.[all]' (pyproject.toml changed or first run)"
  log="$VENV/.ark-pip.log"
  if ! (cd "$REPO" && "$VENV/bin/python" -m pip install --upgrade pip \
        && "$VENV/bin/python" -m pip install -e '.[all]') >"$log" 2>&1; then
    tail -30 "$log"
    step "pip: ERROR, install failed; full output in $log"
    exit 1
  fi
  echo "$want" >"$STAMP"
fi

# -- 3. Kafka jars -------------------------------------------------------------------------------
# The compiled hot path (issue 13: redo codec, pgoutput tuples): optional. A failed build only warns: Ark then uses
# its pure-Python code, same bytes.
if hot="$(cd "$REPO" && "$VENV/bin/python" -m ops.build_hot --check 2>&1)"; then
  step "hot path: ok, compiled $hot"
else
  step "hot path: WARNING not built, Ark uses its pure-Python code: $(echo "$hot" | tail -3 | tr '\n' ' ')"
fi
step "kafka: jars in $(cd "$REPO" && "$VENV/bin/python" -m deploy.kafka fetch)"
step "kafka tools: jars in $(cd "$REPO" && "$VENV/bin/python" -m deploy.kafka fetch-tools)"
step "done"
