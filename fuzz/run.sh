#!/usr/bin/env bash
# Runs Muster's fuzz targets one after another (one process: fuzzing is CPU-bound) and prints,
# per target, the executions, executions per second, wall time and crashes.
#
#   fuzz/run.sh                 every target for 10,000,000 executions (the documented figure)
#   fuzz/run.sh 2000000         every target for that many executions
#   fuzz/run.sh 600s            every target for 600 seconds
#   fuzz/run.sh --smoke         every target for a few seconds (what .ci/run does)
#   fuzz/run.sh wal_recovery fsm_apply              only the targets named (any limit first)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target starts
# from its committed seeds (fuzz/seeds/<target>) and a working corpus (fuzz/corpus/<target>,
# not committed) that grows across runs; a crashing input is saved under
# fuzz/artifacts/<target>/ and reproduced with `cargo +nightly fuzz run <target> <file>`.
# Builds are release with debug assertions and overflow checks, without a sanitizer: Muster
# forbids unsafe code, and AddressSanitizer would halve the executions per second.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(token_decode config_parse csr_sign wal_recovery snapshot_stream fsm_apply proto_decode)
limit=(-runs=10000000)
case "${1:-}" in
  --smoke) limit=(-max_total_time="${FUZZ_SMOKE_SECONDS:-10}"); shift ;;
  [0-9]*s) limit=(-max_total_time="${1%s}"); shift ;;
  [0-9]*) limit=(-runs="$1"); shift ;;
  "" | [a-z]*) ;;
  *) echo "usage: fuzz/run.sh [--smoke | RUNS | SECONDSs] [TARGET...]" >&2; exit 2 ;;
esac
(($# > 0)) && TARGETS=("$@")

cargo +nightly fuzz build --sanitizer none
bin_dir=target/x86_64-unknown-linux-gnu/release

mkdir -p logs
status=0
printf '%-16s %14s %10s %9s %8s\n' target executions exec/s seconds crashes
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="logs/$target.log"
  stamp="logs/$target.start"
  touch "$stamp"
  start=$(date +%s)
  set +e
  "$bin_dir/$target" "${limit[@]}" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" "corpus/$target" "seeds/$target" >"$log" 2>&1
  code=$?
  set -e
  seconds=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  crashes=$(find "artifacts/$target" -type f -newer "$stamp" \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  printf '%-16s %14s %10s %9s %8s\n' "$target" "${runs:-?}" "${rate:-?}" "$seconds" "$crashes"
  if ((code != 0 || crashes > 0)); then
    status=1
    echo "  $target failed (exit $code); see fuzz/$log and fuzz/artifacts/$target/" >&2
  fi
done
exit $status
