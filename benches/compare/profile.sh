#!/usr/bin/env bash
# Profiles one workload of the comparison harness against a single arca server, for `perf`.
#
#   cargo build --profile profiling --bin arca        # release code with symbols (Cargo.toml)
#   benches/compare/profile.sh read|write|transit [SECONDS]
#   PERF=1 benches/compare/profile.sh read            # and record target/profile/perf.data
#   perf report -i target/profile/perf.data --children --sort sym
#
# It starts `arca server --dev` on a free loopback port with a fresh store under
# target/profile/, writes 1,000 secrets, warms up for 2 s, then runs oha (installed by run.sh
# into target/compare-tools) at 16 connections and prints requests/s, p99 and the server's CPU
# time per successful request. It stops the server it started, by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."
workload=${1:?usage: profile.sh read|write|transit [seconds]}
seconds=${2:-8}
bin=${ARCA_BIN:-target/profiling/arca}
oha=target/compare-tools/bin/oha
[ -x "$bin" ] || { echo "no $bin: cargo build --profile profiling --bin arca" >&2; exit 1; }
[ -x "$oha" ] || { echo "no $oha: run benches/compare/run.sh --quick once" >&2; exit 1; }
dir=target/profile
rm -rf "$dir" && mkdir -p "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
"$bin" server --dev --data-dir "$dir/data" --listen "127.0.0.1:$port" --log-level warn >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "$url/v1/sys/health" && break; sleep 0.1; done
token=$(cat "$dir/data/dev-root-token")
body='{"data":{"password":"0123456789abcdef0123456789abcdef","user":"bench"}}'
for i in $(seq -w 0 999); do
  curl -sf -o /dev/null -X PUT -H "X-Vault-Token: $token" -d "$body" "$url/v1/secret/data/load/$i"
done
curl -sf -o /dev/null -X POST -H "X-Vault-Token: $token" "$url/v1/transit/keys/bench"
case $workload in
  read) args=(-m GET --rand-regex-url "$url/v1/secret/data/load/[0-9]{3}") ;;
  write) args=(-m PUT -d "$body" --rand-regex-url "$url/v1/secret/data/bench/[0-9]{12}") ;;
  transit) args=(-m POST -d '{"plaintext":"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}' "$url/v1/transit/encrypt/bench") ;;
  *) echo "unknown workload $workload" >&2; exit 2 ;;
esac
"$oha" --no-tui -z 2s -c 16 -H "X-Vault-Token: $token" "${args[@]}" >/dev/null
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(cpu_ticks)
if [ -n "${PERF:-}" ]; then
  perf record -F 2000 -g --call-graph dwarf,16384 -p "$pid" -o "$dir/perf.data" -- sleep "$seconds" >/dev/null 2>&1 &
  perf_pid=$!
fi
"$oha" --no-tui --output-format json -z "${seconds}s" -c 16 -H "X-Vault-Token: $token" "${args[@]}" >"$dir/oha.json"
after=$(cpu_ticks)
[ -n "${PERF:-}" ] && wait "$perf_pid"
python3 - "$dir/oha.json" "$((after - before))" "$(getconf CLK_TCK)" "$workload" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
ticks, hz, workload = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ok = sum(v for k, v in report["statusCodeDistribution"].items() if k.startswith("2"))
errors = {k: v for k, v in report["statusCodeDistribution"].items() if not k.startswith("2")}
print(f"{workload}: {report['summary']['requestsPerSec']:.0f} req/s, "
      f"p99 {report['latencyPercentiles']['p99'] * 1e3:.2f} ms, "
      f"server CPU {ticks / hz * 1e6 / max(ok, 1):.1f} µs per successful request, errors {errors or 'none'}")
PY
grep VmRSS "/proc/$pid/status"
