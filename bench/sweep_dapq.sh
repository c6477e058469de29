#!/usr/bin/env bash
# File: bench/sweep_dapq.sh
# Sweeps DapQ's options with `dapq eval` on a held-out set of needle prompts (seeds 1000..1063
# by default, disjoint from the reported seeds 0..63) and writes one summary table, so the
# defaults are chosen on prompts the committed results do not use.
# Usage: bench/sweep_dapq.sh [out_dir=bench/results/eval/sweep] [first_seed=1000] [seeds=64]
#          [config_file]
#   config_file: "name|flags" lines ('#' starts a comment) replacing the built-in list; the
#   summary is then <out_dir>/<config_file's name without extension>.md instead of sweep.md.
#   DAPQ is the binary (default build/cli/dapq).
# Each line of CONFIGS is "name|dapq eval flags" (the compression flags apply to the dapq rows
# only: the baselines always run with their defaults); every run evaluates the 8 grid budgets
# (3/6/12/25% and 16/32/64/128 tokens). The summary (sweep.md) gives, per config, the mean over
# all budgets and over the tight ones (3%, 6%, 12%, 16, 32) of each metric.
set -euo pipefail
CONFIG_FILE=${4:+$(realpath "$4")}
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/eval/sweep}
FIRST=${2:-1000}
SEEDS=${3:-64}
DAPQ=${DAPQ:-build/cli/dapq}
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}  # tiny GEMMs: threads only cost time

CONFIGS=(
  # Baselines, then one DapQ option at a time around the current defaults.
  "snapkv|--methods snapkv"
  "tova|--methods tova"
  "expected_attention|--methods expected_attention"
  "dapq (current defaults)|--methods dapq"
  "content=mean|--methods dapq --content mean"
  "content=last_token|--methods dapq --content last_token"
  "positions=actual|--methods dapq --positions actual"
  "w_p=4|--methods dapq --query_window 4"
  "w_p=8|--methods dapq --query_window 8"
  "w_p=32|--methods dapq --query_window 32"
  "gamma=0.9|--methods dapq --gamma 0.9"
  "gamma=0.7|--methods dapq --gamma 0.7"
  "kernel=1|--methods dapq --kernel 1"
  "kernel=3|--methods dapq --kernel 3"
  "kernel=5|--methods dapq --kernel 5"
  "pool=avg|--methods dapq --pool avg"
  "window=0|--methods dapq --window 0"
  "window=4|--methods dapq --window 4"
  "window=16|--methods dapq --window 16"
  "mode=forward|--methods dapq --mode forward"
  "last_token w_p=1|--methods dapq --content last_token --query_window 1"
  "last_token w_p=4|--methods dapq --content last_token --query_window 4"
  "last_token w_p=32|--methods dapq --content last_token --query_window 32"
  "last_token w_p=64|--methods dapq --content last_token --query_window 64"
  "last_token stride=4|--methods dapq --content last_token --stride 4"
  "last_token gamma=0.9|--methods dapq --content last_token --gamma 0.9"
  "last_token kernel=1|--methods dapq --content last_token --kernel 1"
  "last_token kernel=3|--methods dapq --content last_token --kernel 3"
  "last_token kernel=5|--methods dapq --content last_token --kernel 5"
  "last_token window=0|--methods dapq --content last_token --window 0"
  "last_token window=4|--methods dapq --content last_token --window 4"
  "last_token window=16|--methods dapq --content last_token --window 16"
  # Combinations around the best single changes (content=last_token, kernel=1).
  "last kernel=1 w_p=4|--methods dapq --kernel 1 --query_window 4"
  "last_token kernel=1 w_p=1|--methods dapq --content last_token --kernel 1 --query_window 1"
  "last_token kernel=1 w_p=4|--methods dapq --content last_token --kernel 1 --query_window 4"
  "last_token kernel=1 w_p=32|--methods dapq --content last_token --kernel 1 --query_window 32"
  "last_token kernel=1 window=0|--methods dapq --content last_token --kernel 1 --window 0"
  "last_token kernel=1 window=4|--methods dapq --content last_token --kernel 1 --window 4"
  "last_token kernel=1 window=16|--methods dapq --content last_token --kernel 1 --window 16"
  "last_token kernel=1 gamma=0.9|--methods dapq --content last_token --kernel 1 --gamma 0.9"
  "last_token kernel=1 positions=actual|--methods dapq --content last_token --kernel 1 --positions actual"
  "last_token kernel=1 offset=16|--methods dapq --content last_token --kernel 1 --offset 16"
  "mode=forward kernel=1|--methods dapq --mode forward --kernel 1"
)
NAME=sweep
if [[ -n "$CONFIG_FILE" ]]; then
  CONFIGS=()
  while IFS= read -r line; do
    [[ -n "$line" && "$line" != \#* ]] && CONFIGS+=("$line")
  done <"$CONFIG_FILE"
  NAME=$(basename "${CONFIG_FILE%.*}")
fi

mkdir -p "$OUT"
summary="$OUT/$NAME.md"
RUNS=$(mktemp -d)  # per-run outputs; only the summary is kept
trap 'rm -rf "$RUNS"' EXIT
{
  echo "# DapQ option sweep (held-out prompts: seeds $FIRST..$((FIRST + SEEDS - 1)))"
  echo
  echo "Produced by \`bench/sweep_dapq.sh $OUT $FIRST $SEEDS${4:+ $4}\`. Each row is one"
  echo "\`dapq eval --first_seed $FIRST --seeds $SEEDS --no_ablation --no_plots <flags>\` run;"
  echo "columns are means over all 8 budgets, then over the tight ones (3%, 6%, 12%, 16, 32)."
  echo "Log p and exact match (%) are the needle's; KL is KL(full ‖ compressed); attn is the"
  echo "kept share of decoding attention."
  echo
  echo "| config | flags | log p | match % | KL | attn | tight log p | tight match % | tight KL | tight attn |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$summary"
i=0
for entry in "${CONFIGS[@]}"; do
  name=${entry%%|*}
  flags=${entry#*|}
  dir="$RUNS/run$((i++))"
  start=$(date +%s)
  # shellcheck disable=SC2086  # flags are words
  "$DAPQ" eval --first_seed "$FIRST" --seeds "$SEEDS" --no_ablation --no_plots $flags \
    --out "$dir" >/dev/null 2>"$dir.log" || { cat "$dir.log"; exit 1; }
  awk -F'\t' -v name="$name" -v flags="$flags" '
    NR > 1 && $1 == "grid" && $3 != "-" {
      tight = ($3 == "3%" || $3 == "6%" || $3 == "12%" || $3 == "16" || $3 == "32")
      n++; lp += $5; em += $7; kl += $9; at += $11
      if (tight) { t++; tlp += $5; tem += $7; tkl += $9; tat += $11 }
    }
    END {
      printf "| %s | `%s` | %.3f | %.1f | %.4f | %.3f | %.3f | %.1f | %.4f | %.3f |\n", name, flags,
             lp / n, 100 * em / n, kl / n, at / n, tlp / t, 100 * tem / t, tkl / t, tat / t
    }' "$dir/results.tsv" >>"$summary"
  echo "sweep: $name done in $(($(date +%s) - start)) s" >&2
done
echo "sweep: wrote $summary" >&2
