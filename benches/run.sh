#!/usr/bin/env bash
# The whole benchmark suite (`make bench`): builds in release, then
#   1. diff + entry encoding (criterion, one core),
#   2. the in-memory pipeline and idle-shard RSS,
#   3. end to end against moto: ddb-audit vs the naive poller,
#   4. `serve`: API latency of history, query, as-of and verify, serve's RSS,
#      and the page in headless Chromium (needs /usr/bin/chromium),
#   5. the proof side: hashing, sealing and verify's checks (criterion), the
#      chain's cost per entry, digest writes per hour, and `verify` over a
#      100,000-entry trail in moto (entries/s, peak RSS).
#   6. the read side on a 100,000-entry trail: Query calls and items read per
#      question, snapshot items/s, write units per entry.
#   7. the item chain: reads per change on a cache hit and a miss, the
#      cache's memory at 1,000,000 items, verify-bundle on a 10,000-entry item.
# Results (text + JSON) in $TARGET_DIR/bench-results/. See BENCHMARKS.md.
# BENCH_QUICK=1: smoke mode (every bench once, tiny workloads), for CI.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
PY=${PY:-.venv/bin/python}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT="$TARGET_DIR/bench-results"
mkdir -p "$OUT"
QUICK=${BENCH_QUICK:-}
start=$(date +%s)
stamp() { echo "== $(date +%H:%M:%S) (+$(( $(date +%s) - start )) s) $*"; }

{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/{print $2}') GB RAM"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc: $(rustc --version)"; echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} | tee "$OUT/machine.txt"

stamp "build (release; benches and the binary), and the emulator's virtualenv meanwhile"
# Benches select the binary too, so target/release/ddb-audit is built here.
# The virtualenv install is mostly downloads: it overlaps the build.
$CARGO bench --locked --no-run &
build=$!
if [[ -n ${VENV_CMD:-} ]]; then $VENV_CMD || { kill "$build"; exit 1; }; fi
wait "$build"
echo "emulator: moto $($PY -c 'from importlib.metadata import version as v; print(v("moto"), "under waitress", v("waitress"))')" \
  | tee -a "$OUT/machine.txt"

stamp "1/7 diff + entry encoding (criterion)"
if [[ -n $QUICK ]]; then
  $CARGO bench --locked --bench diff -- --test | tee "$OUT/diff.txt"
else
  $CARGO bench --locked --bench diff 2>&1 | tee "$OUT/diff.raw.txt"
  $PY benches/criterion_table.py "$TARGET_DIR" | tee "$OUT/diff.txt"
fi

stamp "2/7 pipeline (simulator, in-memory stores) and idle-shard RSS"
$CARGO bench --locked --bench pipeline -- ${QUICK:+--quick} | tee "$OUT/pipeline.txt"

stamp "3/7 end to end against moto: ddb-audit vs the naive poller"
$PY benches/e2e/run.py --bin "$TARGET_DIR/release/ddb-audit" --out "$OUT/e2e.json" ${QUICK:+--quick} \
  | tee "$OUT/e2e.txt"

stamp "4/7 serve: API latency, RSS and the page in Chromium, against moto"
$PY benches/serve_api.py --bin "$TARGET_DIR/release/ddb-audit" --out "$OUT/serve.json" ${QUICK:+--quick} \
  | tee "$OUT/serve.txt"

stamp "5/7 proof: CPU (criterion), chain cost, digests per hour, verify on 100,000 entries"
$CARGO bench --locked --bench proof -- ${QUICK:+--test} 2>&1 | tee "$OUT/proof.txt"
$CARGO bench --locked --bench proof_trail -- ${QUICK:+--quick} --out "$OUT/proof_trail.json" \
  | tee "$OUT/proof_trail.txt"

stamp "6/7 read side on a 100,000-entry trail, against moto"
$CARGO bench --locked --bench read_trail -- ${QUICK:+--quick} | tee "$OUT/read_trail.txt"

stamp "7/7 item chain: reads per change, cache memory, verify-bundle on 10,000 entries"
$CARGO bench --locked --bench item_chain -- ${QUICK:+--quick} | tee "$OUT/item_chain.txt"

stamp "done; results in $OUT"
