"""Command line: python -m tools.random_checkpoints OUT_DIR --type base --preset tiny [--seed N ...]."""

from __future__ import annotations

import argparse
from pathlib import Path

from .presets import MODEL_SIZES, MODEL_TYPES, PRESETS
from .writer import DTYPES, write_checkpoint, write_codec_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.random_checkpoints",
        description="Write a seeded random Qwen3-TTS checkpoint in the official layout.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--type", dest="model_type", choices=MODEL_TYPES, default="base")
    parser.add_argument("--preset", choices=PRESETS, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--talker-layers", type=int)
    parser.add_argument("--predictor-layers", type=int)
    parser.add_argument("--codec-layers", type=int)
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES))
    parser.add_argument("--eos-scale", type=float, default=0.0)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bfloat16")
    parser.add_argument(
        "--codec-only", action="store_true", help="write a standalone codec (Qwen3-TTS-Tokenizer-12Hz) directory"
    )
    args = parser.parse_args(argv)
    try:
        if args.codec_only:
            path = write_codec_checkpoint(args.out_dir, args.preset, seed=args.seed, codec_layers=args.codec_layers)
        else:
            path = write_checkpoint(
                args.out_dir,
                args.model_type,
                args.preset,
                seed=args.seed,
                talker_layers=args.talker_layers,
                predictor_layers=args.predictor_layers,
                codec_layers=args.codec_layers,
                model_size=args.model_size,
                eos_scale=args.eos_scale,
                dtype=args.dtype,
            )
    except ValueError as exc:
        parser.error(str(exc))
    print(path)
    return 0
