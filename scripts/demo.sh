#!/usr/bin/env bash
# File: scripts/demo.sh
# The main job: installs dependencies, builds, and generates text from the default model
# (stories260K, llama2.c format) with the tensor-parallel CPU engine (TP=2), compressing the
# prompt's KV cache with DapQ at the end of prefill. Prints the text, KV kept vs full, time to
# first token and tokens/s.
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
exec ./build/cli/dapq generate \
  --model "$MODELS/stories260K.bin" --tokenizer "$MODELS/tok512.bin" \
  --prompt "$PROMPT" --steps 120 --tp 2 --method dapq --budget 24 "$@"
