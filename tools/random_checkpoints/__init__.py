"""Seeded random Qwen3-TTS checkpoints in the official directory layout.

The official weights are several GB and cannot be fetched on the build machines, so tests, the
benchmark and the zero-configuration service start-up use checkpoints written here: the same files,
config keys, tensor names and shapes as a released `Qwen/Qwen3-TTS-12Hz-*` directory, filled with
seeded random numbers. A model loaded from one speaks noise, but every code path (loading, prompt
construction, sampling, codec encode/decode, speaker embedding) runs exactly as with real weights,
and the reference package `qwen-tts` loads the same directory, which is what parity tests compare.

Nothing here imports a model class: tensor names and shapes are computed from the config dicts
(spec §9.3/§9.4), and tests/tools/test_random_checkpoints.py checks them against the reference classes.

Modules
  ids.py             the real special ids (codec, languages, speakers)
  presets.py         model types, presets ("tiny", "0.6b", "1.7b") and their widths
  text_tokenizer.py  the toy byte-level BPE tokenizer (vocab.json, merges.txt, tokenizer_config.json)
  configs.py         config.json, speech_tokenizer/config.json and the fixed JSON files
  spec_blocks.py     the tensor-spec format and the layers both weight files share
  main_specs.py      tensors of model.safetensors: talker, code predictor, speaker encoder
  codec_specs.py     tensors of speech_tokenizer/model.safetensors: codec decoder, Mimi encoder
  weights.py         seeded tensors drawn from specs, saved as safetensors
  writer.py          write_checkpoint, write_codec_checkpoint
  default_models.py  default_checkpoint: the tiny checkpoints generated once under var/models/
  cli.py             the command line (__main__.py runs it)

Library use:
    write_checkpoint(out_dir, "base", "tiny", seed=0)
    write_codec_checkpoint(out_dir, "tiny")
    default_checkpoint("custom_voice")     # generated once under <repo>/var/models/
CLI:
    python -m tools.random_checkpoints OUT_DIR --type base --preset tiny [--seed N ...]
"""

from .cli import main
from .codec_specs import codec_tensor_specs
from .configs import (
    CODEC_PREPROCESSOR_CONFIG,
    GENERATION_CONFIG,
    ROOT_PREPROCESSOR_CONFIG,
    build_codec_config,
    build_config,
)
from .default_models import COMPLETE_MARKER, FORMAT_VERSION, REPO_ROOT, default_checkpoint, default_models_dir
from .ids import CODEC_EOS_ID, CODEC_IDS, CODEC_VOCAB_SIZE, LANGUAGE_IDS, SPEAKERS
from .main_specs import main_tensor_specs
from .presets import MODEL_TYPES, PRESETS
from .text_tokenizer import SPECIAL_TOKENS, text_vocab_size, toy_tokenizer
from .writer import write_checkpoint, write_codec_checkpoint

__all__ = [
    "CODEC_EOS_ID",
    "CODEC_IDS",
    "CODEC_PREPROCESSOR_CONFIG",
    "CODEC_VOCAB_SIZE",
    "COMPLETE_MARKER",
    "FORMAT_VERSION",
    "GENERATION_CONFIG",
    "LANGUAGE_IDS",
    "MODEL_TYPES",
    "PRESETS",
    "REPO_ROOT",
    "ROOT_PREPROCESSOR_CONFIG",
    "SPEAKERS",
    "SPECIAL_TOKENS",
    "build_codec_config",
    "build_config",
    "codec_tensor_specs",
    "default_checkpoint",
    "default_models_dir",
    "main",
    "main_tensor_specs",
    "text_vocab_size",
    "toy_tokenizer",
    "write_checkpoint",
    "write_codec_checkpoint",
]
