"""Writing checkpoint directories: `write_checkpoint` (a TTS model) and `write_codec_checkpoint`.

A TTS checkpoint directory holds
  config.json, generation_config.json, preprocessor_config.json, model.safetensors,
  vocab.json, merges.txt, tokenizer_config.json,
  speech_tokenizer/{config.json, preprocessor_config.json, model.safetensors}
and a standalone codec directory (Qwen3-TTS-Tokenizer-12Hz) the three codec files at its root.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .codec_specs import codec_tensor_specs
from .configs import (
    CODEC_PREPROCESSOR_CONFIG,
    GENERATION_CONFIG,
    ROOT_PREPROCESSOR_CONFIG,
    build_codec_config,
    build_config,
)
from .ids import CODEC_EOS_ID
from .main_specs import main_tensor_specs
from .presets import check_choice
from .text_tokenizer import tokenizer_files
from .weights import materialise, save_tensors

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def write_json(path: Path, data: dict) -> None:
    """UTF-8 JSON, indented by 2, with a final newline (the layout of the released files)."""
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _write_files(out_dir: Path, files: dict[str, dict | str]) -> None:
    """Write {file name: content}: a dict as JSON, a str as it is."""
    for name, content in files.items():
        if isinstance(content, str):
            (out_dir / name).write_text(content, encoding="utf-8")
        else:
            write_json(out_dir / name, content)


def _write_codec_files(out_dir: Path, preset: str, seed: int, codec_layers: int | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    config = build_codec_config(preset, codec_layers=codec_layers)
    tensors = materialise(codec_tensor_specs(config), seed, torch.float32)
    save_tensors(tensors, out_dir / "model.safetensors")
    _write_files(out_dir, {"config.json": config, "preprocessor_config.json": CODEC_PREPROCESSOR_CONFIG})


def write_codec_checkpoint(out_dir, preset: str = "tiny", *, seed: int = 0, codec_layers: int | None = None) -> Path:
    """Write a standalone `Qwen3-TTS-Tokenizer-12Hz` directory (the 3 codec files at the root)."""
    out_dir = Path(out_dir)
    _write_codec_files(out_dir, preset, seed, codec_layers)
    return out_dir


def write_checkpoint(
    out_dir,
    model_type: str,
    preset: str = "tiny",
    *,
    seed: int = 0,
    talker_layers: int | None = None,
    predictor_layers: int | None = None,
    codec_layers: int | None = None,
    model_size: str | None = None,
    eos_scale: float = 0.0,
    dtype: str = "bfloat16",
) -> Path:
    """Write a full TTS checkpoint directory in the official layout and return its path.

    `eos_scale` multiplies the `codec_head` row of the EOS id (2150): 0.0 (default) means greedy
    runs never stop early and go to `max_new_tokens`; a large value (e.g. 50) makes EOS win
    whenever that row's logit is positive, so generation stops after a few frames. Same arguments
    give byte-identical files.
    """
    check_choice("dtype", dtype, tuple(DTYPES))
    out_dir = Path(out_dir)
    config = build_config(
        model_type, preset, talker_layers=talker_layers, predictor_layers=predictor_layers, model_size=model_size
    )
    build_codec_config(preset, codec_layers=codec_layers)  # validate before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)

    def scale_eos(head: torch.Tensor) -> torch.Tensor:
        head[CODEC_EOS_ID] = head[CODEC_EOS_ID] * float(eos_scale)
        return head

    tensors = materialise(
        main_tensor_specs(config), seed, DTYPES[dtype], adjust={"talker.codec_head.weight": scale_eos}
    )
    save_tensors(tensors, out_dir / "model.safetensors")
    del tensors
    _write_files(
        out_dir,
        {
            "config.json": config,
            "generation_config.json": GENERATION_CONFIG,
            "preprocessor_config.json": ROOT_PREPROCESSOR_CONFIG,
            **tokenizer_files(),
        },
    )
    _write_codec_files(out_dir / "speech_tokenizer", preset, seed, codec_layers)
    return out_dir
