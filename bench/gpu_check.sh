#!/usr/bin/env bash
# The GPU check, one command, about 10 minutes on one H100-class GPU (docs/benchmarks.md):
#   1. bench/gpu_check.py: CUDA graphs give the eager codes (float32, exit 1 if not); bf16 vs
#      float32 agreement; ms per decode step at 1, 8, 32, 64 streams, eager and with graphs,
#      on the real-shape 1.7B;
#   2. make bench-engine's counts (launches per frame, syncs per step: device-independent);
#   3. first audio at the gateway with Poisson arrivals at 1, 10 and 20 requests/s, the generator
#      on the GPU in bfloat16, real-shape 1.7B.
# It needs a CUDA build of torch==2.13.0 in .venv (`make setup` installs the CPU wheel). Every step
# writes its section of docs/benchmarks.md. CI never runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch: install a CUDA build of torch==2.13.0 into .venv")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

timeout 300 "$PY" -m bench.gpu_check --device cuda --size 1.7b
timeout 120 "$PY" -m bench.bench_engine --streams 1 64
GENERATOR_DEVICE=cuda GENERATOR_DTYPE=bfloat16 \
    timeout 240 "$PY" -m bench.bench_cluster --preset 1.7b-full --rounds 0 --rates 1,10,20 --duration 15
