#!/usr/bin/env bash
# The GPU check, one command, at most 8 minutes on one H100-class GPU (docs/benchmarks.md):
#   1. bench/gpu_check.py: CUDA graphs give the eager codes (float32, exit 1 if not); bf16 vs
#      float32 agreement; ms per decode step at 1, 8, 32, 64 streams, eager and with graphs,
#      on the real-shape 1.7B;
#   2. make bench-engine's counts (launches per frame, syncs per step: device-independent);
#   3. first audio at the gateway with Poisson arrivals at 1, 10 and 20 requests/s, the generator
#      on the GPU in bfloat16, real-shape 1.7B.
# Where .whl/ is here (`make gpu-kit`, carried to a lent GPU machine that reaches no package index),
# it runs on that machine's python3 and its CUDA torch, with the wheels installed into /tmp/site;
# else on $PY (default .venv/bin/python, which then needs a CUDA build of torch). Each step writes
# its section of docs/benchmarks.md; a failed step does not stop the next, and the exit status says
# whether any failed. CI never runs it.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -d .whl ]; then
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH="/tmp/site:$PWD:$PWD/gen/python${PYTHONPATH:+:$PYTHONPATH}"
    PY=${PY:-python3}
else
    PY=${PY:-.venv/bin/python}
fi
"$PY" -c 'import sys, torch; print("torch", torch.__version__); sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")' || exit
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

failed=0
timeout 240 "$PY" -m bench.gpu_check --device cuda --size 1.7b || failed=1
timeout 60 "$PY" -m bench.bench_engine --streams 1 64 || failed=1
GENERATOR_DEVICE=cuda GENERATOR_DTYPE=bfloat16 \
    timeout 180 "$PY" -m bench.bench_cluster --preset 1.7b-full --rounds 0 --rates 1,10,20 --duration 10 || failed=1
exit $failed
