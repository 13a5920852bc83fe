#!/usr/bin/env bash
# Runs the cargo-fuzz targets of tests/fuzz, each for a bounded time on its committed corpus, and fails on the first
# crash (its input is left in tests/fuzz/artifacts/<target>/; make it a regression test). Installs cargo-fuzz if
# it is missing; needs the nightly toolchain.
#
#   tests/fuzz/run.sh                   every target, 60 s each
#   tests/fuzz/run.sh wire 600          one target, ten minutes
#   TAILGATE_FUZZ_SECONDS=15 TAILGATE_FUZZ_SEED=1 tests/fuzz/run.sh      what tests/run.sh (and so CI) runs
#
# New inputs that reach new code are added to the corpus directory; `cargo +nightly fuzz cmin --fuzz-dir
# tests/fuzz <target> tests/fuzz/corpus/<target>` shrinks it before committing.
set -euo pipefail
cd "$(dirname "$0")/../.."

targets=(wire otlp_protobuf otlp_json decompress sampler_record exporter_record config)
if [ $# -ge 1 ] && [ "$1" != all ]; then targets=("$1"); fi
seconds=${2:-${TAILGATE_FUZZ_SECONDS:-60}}
seed=${TAILGATE_FUZZ_SEED:-0}   # 0: libFuzzer picks one

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --quiet
fi

# Tailgate's crates forbid unsafe code, so AddressSanitizer would add cost and find nothing of theirs; libFuzzer's
# coverage, debug assertions and overflow checks stay.
flags=(--fuzz-dir tests/fuzz --sanitizer none --debug-assertions)
cargo +nightly fuzz build "${flags[@]}"

passed=0
for target in "${targets[@]}"; do
  corpus="tests/fuzz/corpus/$target"
  mkdir -p "$corpus"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" -- \
      -max_total_time="$seconds" -seed="$seed" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: target $target failed; the input is in tests/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  inputs=$(find "$corpus" -type f | wc -l)
  echo "fuzz target $target: ${runs:-?} executions in ${seconds} s, no crash (corpus: $inputs inputs)"
  rm -f "$log"
  passed=$((passed + 1))
done
echo "fuzz: $passed targets ran without a crash"
