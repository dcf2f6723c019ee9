"""Fixtures shared by the whole test suite.

  reference          the qwen-tts reference oracle (tests/helpers/oracle_client.py). Builds .venv-ref on
                     first use with tests/reference/setup_env.sh; if that fails, every test using
                     the fixture ERRORS with the reason (never a silent skip). Tests that use it
                     are marked `reference` automatically.
  tiny_base, tiny_custom_voice, tiny_voice_design
                     tiny random checkpoints (seed 0) of each model type, official layout.
  tiny_codec         a standalone tiny codec directory (Qwen3-TTS-Tokenizer-12Hz layout).
  real_width         factory real_width(model_type, "0.6b" | "1.7b") -> Path of a checkpoint with
                     the real widths and 2 talker / 2 predictor / 2 codec layers, created on first
                     use and removed at the end of the session. Tests that use it are marked `slow`.

Deselect with `-m "not reference"` / `-m "not slow"`. See docs/testing.md.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.helpers.oracle_client import ReferenceOracle, ensure_reference_env
from tools.random_checkpoints import write_checkpoint, write_codec_checkpoint

REAL_WIDTH_SIZES = ("0.6b", "1.7b")

# Service processes started by the tests (LocalCluster inherits this environment) run the models
# in float32, the dtype in which their output equals the offline API's and the reference's.
os.environ.setdefault("GENERATOR_DTYPE", "float32")


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "reference" in names and item.get_closest_marker("reference") is None:
            item.add_marker(pytest.mark.reference)
        if "real_width" in names and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    python = ensure_reference_env()  # raises ReferenceEnvError with the build log tail
    oracle = ReferenceOracle(python=python, workdir=tmp_path_factory.mktemp("oracle"))
    yield oracle
    oracle.close()


@pytest.fixture(scope="session")
def tiny_checkpoints_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny-checkpoints")


@pytest.fixture(scope="session")
def tiny_base(tiny_checkpoints_dir):
    return write_checkpoint(tiny_checkpoints_dir / "tiny-base-seed0", "base", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_custom_voice(tiny_checkpoints_dir):
    return write_checkpoint(tiny_checkpoints_dir / "tiny-custom_voice-seed0", "custom_voice", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_voice_design(tiny_checkpoints_dir):
    return write_checkpoint(tiny_checkpoints_dir / "tiny-voice_design-seed0", "voice_design", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_codec(tiny_checkpoints_dir):
    return write_codec_checkpoint(tiny_checkpoints_dir / "tiny-codec-seed0", "tiny", seed=0)


@pytest.fixture(scope="session")
def real_width(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-width")
    made = {}

    def make(model_type: str, size: str):
        if size not in REAL_WIDTH_SIZES:
            raise ValueError(f"real_width size must be one of {REAL_WIDTH_SIZES}, got {size!r}")
        key = (model_type, size)
        if key not in made:
            made[key] = write_checkpoint(root / f"{size}-{model_type}-seed0", model_type, size, seed=0)
        return made[key]

    yield make
    shutil.rmtree(root, ignore_errors=True)  # each is about 0.8-1 GB
