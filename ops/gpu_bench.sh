#!/usr/bin/env bash
# The bench on a GPU machine, within 8 minutes, so a GPU host shows everything
# in one run:
#  1. `pipeline bench --gpu` (5.5 min at most): raw ONNX Runtime on the CPU and
#     on CUDA with I/O binding (fp32, and fp16 once its parity check against
#     fp32 passes), the pipeline on the CPU (PIPELINE_PROVIDER, default cpu)
#     and on CUDA with one member per stage, and the scaled-member rows on
#     CUDA (GPU_BENCH_MEMBERS, `--members` syntax), every GPU member with its
#     budget (PIPELINE_GPU_MEM_LIMIT_MB, default 4096; the start refuses
#     members whose budgets and contexts do not fit the device).
#  2. `pipeline chat-bench` with the chat engine on CUDA
#     (PIPELINE_GENERATE_PROVIDER=cuda; 2 min at most; GPU_BENCH_CHAT=0 skips it).
# On a machine without CUDA the GPU rows print "skipped: no CUDA" and the rest
# still runs. Needs the broker at PIPELINE_BOOTSTRAP_SERVERS (make broker) and
# the model exports (make setup). Usage: ops/gpu_bench.sh [extra pipeline bench flags]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
MEMBERS="${GPU_BENCH_MEMBERS:-infer=4;filter=2,split=2,infer=4,merge=2}"
export PIPELINE_PROVIDER="${PIPELINE_PROVIDER:-cpu}"
export PIPELINE_GPU_MEM_LIMIT_MB="${PIPELINE_GPU_MEM_LIMIT_MB:-4096}"
mkdir -p .cache/bench
status=0
timeout 330 "$PYTHON" -m pipeline.cli bench --gpu --no-eager --no-naive --guarantees exactly_once \
  --batches 1,64,256 --members "$MEMBERS" --json .cache/bench/gpu.json "$@" || status=$?
if [ "${GPU_BENCH_CHAT:-1}" = 1 ]; then
  PIPELINE_GENERATE_PROVIDER=cuda timeout 120 "$PYTHON" -m pipeline.cli chat-bench \
    --concurrency 1,8 --rounds 2 --tokens 32 || status=$?
fi
exit "$status"
