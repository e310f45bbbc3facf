#!/usr/bin/env bash
# arca's test command (see README.md): prepares what the tests need on a fresh machine, then
# runs every test of the workspace with every feature, doc tests included. Extra arguments are
# passed to `cargo test`, e.g. `tests/run.sh -p arca-storage` or `tests/run.sh -- --nocapture`.
#
# Setup steps are functions, each idempotent and quick when nothing changed, so a later need
# (npm packages, a PostgreSQL server from Debian's packages) is one more function called below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/target/test-venv"
REQUIREMENTS="$ROOT/tests/requirements.txt"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'tests/run.sh: %s\n' "$*" >&2; exit 1; }

# Debian's packages, installed only when missing and only as root (CI, a fresh machine).
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "need Debian packages $* (run as root, or install them)"
  command -v apt-get >/dev/null || die "need packages $* and found no apt-get"
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# A Python virtual environment under target/test-venv with tests/requirements.txt installed.
# A stamp file holds the hash of the requirements and the interpreter: when neither changed,
# nothing is installed again. Its bin/ goes first on PATH, so tests find `aws`, `bao`,
# `moto_server` and the venv's `python3` (with hvac and boto3) by name.
# The stamp's format and the lock file are shared with tests/common/venv.rs, which prepares
# the same venv when the tests run without this script.
python_venv() {
  command -v python3 >/dev/null || apt_install python3 python3-venv python3-pip
  mkdir -p "$ROOT/target"
  exec 9>"$ROOT/target/test-venv.lock"
  flock 9
  local interpreter want stamp="$VENV/.requirements.sha256"
  interpreter="$(python3 -c 'import sys; print(sys.version, sys.base_prefix)')"
  want="$({ cat "$REQUIREMENTS"; echo "$interpreter"; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python3" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "python: $VENV is up to date"
  else
    if ! "$VENV/bin/python3" -c 'import sys' 2>/dev/null \
      || [[ "$("$VENV/bin/python3" -c 'import sys; print(sys.version, sys.base_prefix)')" != "$interpreter" ]]; then
      log "python: creating $VENV"
      rm -rf "$VENV"
      if ! python3 -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 keeps venv (and ensurepip) in a package of its own.
        rm -rf "$VENV"
        apt_install python3-venv
        python3 -m venv "$VENV"
      fi
    fi
    log "python: installing tests/requirements.txt"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
      --requirement "$REQUIREMENTS"
    echo "$want" >"$stamp"
  fi
  # Release the lock before the tests start: they take it themselves.
  exec 9>&-
  export VIRTUAL_ENV="$VENV"
  export PATH="$VENV/bin:$PATH"
  local tool
  for tool in aws bao moto_server; do
    command -v "$tool" >/dev/null || die "$tool is missing from $VENV"
  done
}

# A PostgreSQL server for the rotation tests (tests/rotation_postgres.rs): the test starts its
# own server in a temporary directory from `initdb` and `postgres`. Debian's `postgresql`
# package keeps them in /usr/lib/postgresql/<version>/bin, out of PATH; install it when no
# server binaries are found, then tell the test where they are.
postgresql() {
  local dir=""
  if command -v initdb >/dev/null && command -v postgres >/dev/null; then
    dir="$(dirname "$(command -v initdb)")"
  else
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
      apt_install postgresql
      dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    fi
  fi
  [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/postgres" ]] \
    || die "no PostgreSQL server binaries after installing postgresql"
  log "postgresql: server binaries in $dir"
  export ARCA_POSTGRES_BIN="$dir"
}

# The npm packages of the Node.js client test (tests/node: the AWS SDK for JavaScript v3,
# pinned by package-lock.json), installed with `npm ci` into tests/node/node_modules. A stamp
# holds the hash of the lock file: when it did not change, nothing is installed again. The
# stamp's format is shared with tests/node_clients.rs, which runs `npm ci` itself
# when the tests run without this script.
node_modules() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  local dir="$ROOT/tests/node" want stamp="$ROOT/tests/node/node_modules/.arca-package-lock.sha256"
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "node: tests/node/node_modules is up to date"
  else
    log "node: npm ci in tests/node"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
}

python_venv
node_modules
postgresql

# --no-fail-fast: one run reports every failing test binary, not only the first.
log "cargo test --workspace --all-features --no-fail-fast $*"
exec cargo test --workspace --all-features --no-fail-fast "$@"
