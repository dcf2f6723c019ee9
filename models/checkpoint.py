"""Reading checkpoint directories in the official Qwen3-TTS layout.

Every problem with a checkpoint (a missing file, unreadable JSON, a missing or misshapen tensor,
an unknown model type) raises `CheckpointError` with a message that names the file and, where it
applies, the key, so that a user who pointed a service at the wrong directory sees what is wrong
instead of a traceback from deep inside torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

# Raised here; defined next to ConfigError so that services without torch can catch it too.
from shared.config import CheckpointError  # noqa: F401

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; use one of {', '.join(DTYPES)}")
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {', '.join(DTYPES)}") from None


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None


def require_key(config: dict, key: str, path: Path):
    """`config[key]`, or a CheckpointError naming the file and the key."""
    if key not in config:
        raise CheckpointError(f"{path}: missing key {key!r}")
    return config[key]


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def load_module_weights(
    module: nn.Module,
    tensors: dict[str, torch.Tensor],
    prefix: str,
    path: Path,
    *,
    file_key=None,
    ignored: tuple[str, ...] = (),
) -> None:
    """Copy `tensors[prefix + name]` into every parameter and persistent buffer of `module`.

    `file_key(name)` maps a state-dict name to its checkpoint key where the two differ (default:
    `prefix + name`). Strict: a missing key, a shape mismatch, or an unexpected key under
    `prefix` (other than those starting with one of `ignored`) is a CheckpointError naming `path`
    and the key. Tensors are cast to the module's dtype.
    """
    file_key = file_key or (lambda name: prefix + name)
    expected = module.state_dict()
    keys = {name: file_key(name) for name in expected}
    for name, target in expected.items():
        key = keys[name]
        if key not in tensors:
            raise CheckpointError(f"{path}: missing tensor {key!r}")
        source = tensors[key]
        if tuple(source.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {tuple(source.shape)}, "
                f"expected {tuple(target.shape)} from the config"
            )
    used = set(keys.values())
    unexpected = sorted(
        k for k in tensors if k.startswith(prefix) and k not in used and not (ignored and k.startswith(ignored))
    )
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:5])
        raise CheckpointError(f"{path}: unexpected tensors {shown} (config does not match weights?)")
    module.load_state_dict({name: tensors[key] for name, key in keys.items()}, strict=True)
