#!/usr/bin/env bash
# File: scripts/demo.sh
# The main job: installs dependencies, builds, starts a local DapQ Serve cluster on the default
# model (stories260K): a coordinator and two worker groups of two tensor-parallel processes each
# (Gloo over loopback). Then sends a long prompt through the coordinator to a TP=2 group with
# DapQ compression, and prints the streamed text, KV kept vs full and the time to first token,
# then the same through the OpenAI-compatible HTTP API (curl), then the cluster's status; the
# cluster is stopped at the end (no process is left behind).
# Usage: bash scripts/demo.sh [extra `dapq generate` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh cpu dapq
MODELS="${DAPQ_MODELS_DIR:-../shared/models}"
PROMPT="Once upon a time, there was a little girl named Lily. Lily had a small red ball. \
She liked to play with her ball in the garden every day. Her mom was baking a big cake in the \
kitchen and the house smelled sweet. The sun was warm and the birds sang in the tall tree. \
Lily's dog Max ran after the ball and barked. One day,"
PORT="${DAPQ_DEMO_PORT:-50051}"
HTTP_PORT="${DAPQ_DEMO_HTTP_PORT:-8000}"
DAPQ=./build/cli/dapq

$DAPQ serve --model "$MODELS/stories260K.bin" --tokenizer "$MODELS/tok512.bin" \
  --groups 2 --tp 2 --port "$PORT" --http_port "$HTTP_PORT" &
SERVE_PID=$!
trap 'kill -INT $SERVE_PID 2>/dev/null; wait $SERVE_PID 2>/dev/null || true' EXIT
$DAPQ status --coordinator "127.0.0.1:$PORT" --wait_s 120 --groups 2
echo
echo "== generate through the coordinator (TP=2 group, DapQ budget 24 per layer and KV head) =="
$DAPQ generate --coordinator "127.0.0.1:$PORT" \
  --prompt "$PROMPT" --steps 120 --method dapq --budget 24 "$@"
echo
echo "== the same prompt through the OpenAI HTTP API (curl; DapQ budget 24; stop at the first '.') =="
curl -sS "http://127.0.0.1:$HTTP_PORT/v1/completions" -H 'Content-Type: application/json' \
  -d "$(printf '{"prompt": "%s", "max_tokens": 60, "temperature": 0, "stop": ["."],
        "kv_compression": {"method": "dapq", "budget": 24}}' "$PROMPT")"
echo
echo
$DAPQ status --coordinator "127.0.0.1:$PORT"
