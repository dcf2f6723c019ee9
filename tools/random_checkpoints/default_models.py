"""The zero-configuration default: `default_checkpoint(model_type)`, generated once and reused.

Services started without a checkpoint path, `make run`, the benchmark and the local deployment use
the tiny seed-0 checkpoint of each model type under <repo>/var/models/ (or
$QWEN_TTS_TINY_MODELS_DIR). A completion marker records the arguments and FORMAT_VERSION, so a
directory written by another version, or left half-written, is regenerated.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from .presets import MODEL_TYPES, check_choice
from .writer import write_checkpoint, write_json

# Bump when the content written for the same arguments changes; default_checkpoint() regenerates
# a cached default whose marker carries another version.
FORMAT_VERSION = 1

COMPLETE_MARKER = ".complete"

REPO_ROOT = Path(__file__).resolve().parents[2]  # <repo>/tools/random_checkpoints/default_models.py


def default_models_dir() -> Path:
    """<repo>/var/models, or $QWEN_TTS_TINY_MODELS_DIR when set (e.g. a read-only checkout)."""
    override = os.environ.get("QWEN_TTS_TINY_MODELS_DIR")
    return Path(override) if override else REPO_ROOT / "var" / "models"


def _marker_ok(path: Path, expected: dict) -> bool:
    marker = path / COMPLETE_MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")) == expected
    except (OSError, ValueError):
        return False


def default_checkpoint(model_type: str) -> Path:
    """The tiny checkpoint of `model_type` (seed 0), generated once under var/models/.

    Idempotent and safe when several processes start at once: generation happens under a file
    lock into a temporary directory that is renamed into place after its completion marker is
    written, so the final path is either absent or complete.
    """
    check_choice("model_type", model_type, MODEL_TYPES)
    root = default_models_dir()
    name = f"tiny-{model_type}-seed0"
    final = root / name
    expected = {"format_version": FORMAT_VERSION, "model_type": model_type, "preset": "tiny", "seed": 0}
    if _marker_ok(final, expected):
        return final
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _marker_ok(final, expected):
                return final
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
            try:
                write_checkpoint(tmp, model_type, "tiny", seed=0)
                write_json(tmp / COMPLETE_MARKER, expected)
                os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
                if final.exists():  # stale or from another format version
                    stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=root))
                    os.rename(final, stale / name)
                    shutil.rmtree(stale, ignore_errors=True)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return final
