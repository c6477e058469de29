#!/usr/bin/env bash
# File: tests/fuzz/run_fuzzers.sh
# Runs the libFuzzer targets of tests/fuzz (built with DAPQ_FUZZ=ON): each one for SECONDS from
# a scratch copy of its checked-in corpus (corpus/<target>/, so the run never writes into the
# tree), with its dictionary (dicts/<target>.dict) when there is one, then replays every
# regression input (regressions/<target>/*). Exits non-zero on the first crash, leak, UB report,
# timeout (-timeout=10 s per input) or out-of-memory (-rss_limit_mb=2048), printing the log tail
# and the crashing input's path.
# Usage: tests/fuzz/run_fuzzers.sh BIN_DIR SECONDS [TARGET...]   (default: every *_fuzzer.cc)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin_dir="$1"
seconds="$2"
shift 2
if (($#)); then
  targets=("$@")
else
  targets=()
  for src in "$here"/*_fuzzer.cc; do targets+=("$(basename "$src" .cc)"); done
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/dapq_fuzz_run.XXXXXX")"
trap 'rm -rf "$work"' EXIT
if [[ -z "${ASAN_SYMBOLIZER_PATH:-}" && -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer  # llvm-14: file:line in reports
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
flags=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)

fail() {  # target, log
  echo "FAILED: $1 (log: $2)" >&2
  grep -v '^#[0-9]' "$2" | tail -n 60 >&2
  exit 1
}

for t in "${targets[@]}"; do
  exe="$bin_dir/$t"
  [[ -x "$exe" ]] || { echo "missing fuzz target $exe" >&2; exit 1; }
  corpus="$work/$t/corpus"
  mkdir -p "$corpus" "$work/$t/artifacts"
  cp "$here/corpus/$t/"* "$corpus/"
  dict=()
  [[ -f "$here/dicts/$t.dict" ]] && dict=(-dict="$here/dicts/$t.dict")
  log="$work/$t.log"
  if ! "$exe" "${flags[@]}" "${dict[@]}" -max_total_time="$seconds" \
      -artifact_prefix="$work/$t/artifacts/" "$corpus" >"$log" 2>&1; then
    cp -r "$work/$t/artifacts" "${TMPDIR:-/tmp}/dapq_fuzz_artifacts_$t" 2>/dev/null || true
    echo "crashing inputs copied to ${TMPDIR:-/tmp}/dapq_fuzz_artifacts_$t" >&2
    fail "$t" "$log"
  fi
  runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  regressions=("$here/regressions/$t/"*)
  replayed=0
  if [[ -e "${regressions[0]}" ]]; then
    if ! "$exe" "${flags[@]}" "${regressions[@]}" >"$log.replay" 2>&1; then
      fail "$t (regression replay)" "$log.replay"
    fi
    replayed=${#regressions[@]}
  fi
  printf '%-28s %9s runs in %ss, %s regression inputs replayed\n' "$t" "${runs:-?}" "$seconds" \
    "$replayed"
done
