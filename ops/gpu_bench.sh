#!/usr/bin/env bash
# The bench on a GPU machine, within 10 minutes: raw ONNX Runtime on CUDA with
# I/O binding (fp32, and fp16 once its parity check against fp32 passes), the
# pipeline on CUDA, and the CPU rows beside them. On a machine without CUDA the
# GPU part prints "skipped: no CUDA" and the rest still runs.
# Needs the broker at PIPELINE_BOOTSTRAP_SERVERS (make broker) and the model
# export (make setup). Usage: ops/gpu_bench.sh [extra pipeline bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
mkdir -p .cache/bench
exec timeout 600 "$PYTHON" -m pipeline.cli bench --gpu --no-eager --guarantees exactly_once \
  --batches 1,16,64,256 --json .cache/bench/gpu.json "$@"
