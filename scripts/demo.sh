#!/usr/bin/env bash
# File: scripts/demo.sh
# The main job: installs dependencies, builds, and generates text from the default model
# (stories260K, llama2.c format) with the tensor-parallel CPU engine (TP=2), printing tokens/s.
# Usage: bash scripts/demo.sh [extra `dapq generate` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh cpu dapq
MODELS="${DAPQ_MODELS_DIR:-../shared/models}"
exec ./build/cli/dapq generate \
  --model "$MODELS/stories260K.bin" --tokenizer "$MODELS/tok512.bin" \
  --prompt "Once upon a time, there was a little girl named Lily." \
  --steps 200 --tp 2 "$@"
