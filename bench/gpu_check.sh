#!/usr/bin/env bash
# The GPU check, one command, at most 10 minutes on one H100-class GPU (docs/benchmarks.md):
#   1. the parity suite on the GPU: ours and the reference package on the tiny checkpoints,
#      greedy codes and waveforms, the first sampling step's distributions (float32);
#   2. bench/gpu_check.py: CUDA graphs give the eager codes (float32, exit 1 if not); bf16 vs
#      float32 agreement; ms per decode step at 1, 8, 32, 64 streams, eager and with graphs,
#      and the first frame's step and the codec's first decode, on the real-shape 1.7B; the
#      codec's pushes captured as CUDA graphs against eager (samples, ms per push);
#   3. make bench-engine's counts (launches per frame, syncs per step: device-independent);
#   4. first audio at the gateway with Poisson arrivals at 1, 10 and 20 requests/s, the generator
#      (bfloat16, real-shape 1.7B) and the codec (float32) on the GPU, as the prod-gpu overlay runs them.
# Where .whl/ is here (`make gpu-kit`, carried to a lent GPU machine that reaches no package index),
# it runs on that machine's python3 and its CUDA torch, with the cluster's wheels installed into
# /tmp/site and the reference's (qwen-tts on transformers 4.57.3) into /tmp/ref-site, which only the
# reference's interpreter sees. Else it runs on $PY (default .venv/bin/python, which then needs a
# CUDA build of torch, as does the reference's: $QWEN_TTS_REF_PYTHON or .venv-ref). Steps 2-4 write
# their sections of docs/benchmarks.md; a failed step does not stop the next, and the exit status
# says whether any failed. CI never runs it.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -d .whl ]; then
    install=(python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade)
    "${install[@]}" --target /tmp/site .whl/*.whl || exit
    "${install[@]}" --target /tmp/ref-site .whl/reference/*.whl || exit
    printf '#!/bin/sh\nPYTHONPATH=/tmp/ref-site exec python3 "$@"\n' >/tmp/ref-python && chmod +x /tmp/ref-python
    export QWEN_TTS_REF_PYTHON=${QWEN_TTS_REF_PYTHON:-/tmp/ref-python}
    export PYTHONPATH="/tmp/site:$PWD:$PWD/gen/python${PYTHONPATH:+:$PYTHONPATH}"
    PY=${PY:-python3}
else
    PY=${PY:-.venv/bin/python}
fi
"$PY" -c 'import sys, torch; print("torch", torch.__version__); sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")' || exit
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

# Where $OUT names a folder (the device tool's), docs/benchmarks.md is copied there after each step,
# so that a run cut short still brings back what it measured.
failed=0
step() {
    "$@" || failed=1
    if [ -n "${OUT:-}" ]; then cp docs/benchmarks.md "$OUT/"; fi
}
step env QWEN_TTS_TEST_DEVICE=cuda timeout 150 "$PY" -m pytest -q -p no:cacheprovider \
    tests/models/test_generation_parity.py -m "reference and not slow"
step timeout 210 "$PY" -m bench.gpu_check --device cuda --size 1.7b
step timeout 45 "$PY" -m bench.bench_engine --streams 1 64
step env GENERATOR_DEVICE=cuda GENERATOR_DTYPE=bfloat16 CODEC_DEVICE=cuda \
    timeout 150 "$PY" -m bench.bench_cluster --preset 1.7b-full --rounds 0 --rates 1,10,20 --duration 10
exit $failed
