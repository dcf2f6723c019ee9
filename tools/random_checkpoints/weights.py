"""Seeded random tensors drawn from specs (see spec_blocks.py), and saving them as safetensors.

Each tensor has its own generator, seeded from (seed, key), so its values do not depend on which
other tensors exist: the same arguments give byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import save_file


def _generator(seed: int, key: str) -> torch.Generator:
    """A generator per tensor, so a tensor's values do not depend on which other tensors exist."""
    digest = hashlib.sha256(f"qwen3-tts-tiny:{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def materialise(specs, seed: int, dtype: torch.dtype, adjust: dict | None = None) -> dict[str, torch.Tensor]:
    """Draw every tensor in float32, apply `adjust[key]` if given, store it in `dtype`.

    Tensors are cast one by one, so a full-depth 1.7B checkpoint never exists in float32 at once.
    """
    adjust = adjust or {}
    out: dict[str, torch.Tensor] = {}
    for key, shape, init in specs:
        kind = init[0]
        if kind == "normal":
            value = torch.randn(shape, generator=_generator(seed, key)) * init[1]
        elif kind == "around":
            value = init[1] + torch.randn(shape, generator=_generator(seed, key)) * init[2]
        elif kind == "const":
            value = torch.full(shape, float(init[1]))
        elif kind == "codebook_usage":
            value = 0.5 + 1.5 * torch.rand(shape, generator=_generator(seed, key))
        elif kind == "codebook_sum":
            usage = out[init[2]].float()
            value = torch.randn(shape, generator=_generator(seed, key)) * init[1] * usage[:, None]
        else:  # pragma: no cover - specs are internal
            raise AssertionError(kind)
        if key in adjust:
            value = adjust[key](value)
        out[key] = value.to(dtype).contiguous()
    return out


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)  # safetensors creates the file 0600; others (services, tests) read it
