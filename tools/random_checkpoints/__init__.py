"""Seeded random Qwen3-TTS checkpoints in the official directory layout.

The official weights are several GB and cannot be fetched on the build machines, so tests, the
benchmark and the zero-configuration service start-up use checkpoints written here: the same files,
config keys, tensor names and shapes as a released `Qwen/Qwen3-TTS-12Hz-*` directory, filled with
seeded random numbers. A model loaded from one speaks noise, but every code path (loading, prompt
construction, sampling, codec encode/decode, speaker embedding) runs exactly as with real weights,
and the reference package `qwen-tts` loads the same directory, which is what parity tests compare.

Nothing here imports a model class: tensor names and shapes are computed from the config dicts
(spec §9.3/§9.4), and `tests/test_tiny_checkpoints.py` checks them against the reference classes.

Presets
  "tiny"          small widths (talker hidden 64) for fast tests; codec strides, quantizer counts,
                  codebook sizes, sliding window and all special ids are the real ones.
  "0.6b", "1.7b"  the real widths of those models; layer counts come from the arguments
                  (default 2/2/2, the benchmark passes 28/5/8 for a full-depth model).

Text vocabulary: every preset uses a toy byte-level BPE tokenizer (256 byte symbols, merges learnt
from a small built-in corpus, whole tokens "assistant" and "user", then the six special tokens), so
`text_vocab_size` is about 1k instead of the real 151936. The toy tokenizer cannot produce larger
ids, so the smaller text-embedding table changes nothing else. The special-token ids in config.json
point at the toy ids.

Library use:
    write_checkpoint(out_dir, "base", "tiny", seed=0)
    write_codec_checkpoint(out_dir, "tiny")
    default_checkpoint("custom_voice")     # generated once under <repo>/var/models/
CLI:
    python -m tools.random_checkpoints OUT_DIR --type base --preset tiny [--seed N ...]
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import save_file

# Bump when the content written for the same arguments changes; default_checkpoint() regenerates
# a cached default whose marker carries another version.
FORMAT_VERSION = 1

MODEL_TYPES = ("base", "custom_voice", "voice_design")
PRESETS = ("tiny", "0.6b", "1.7b")
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}
COMPLETE_MARKER = ".complete"

# ---------------------------------------------------------------------------------------------
# Real ids (spec §1.2, §1.3, §4.5)
# ---------------------------------------------------------------------------------------------

CODEC_VOCAB_SIZE = 3072
CODEC_IDS = {
    "codec_pad_id": 2148,
    "codec_bos_id": 2149,
    "codec_eos_token_id": 2150,
    "codec_think_id": 2154,
    "codec_nothink_id": 2155,
    "codec_think_bos_id": 2156,
    "codec_think_eos_id": 2157,
}
CODEC_EOS_ID = CODEC_IDS["codec_eos_token_id"]
LANGUAGE_IDS = {
    "english": 2050,
    "german": 2053,
    "spanish": 2054,
    "chinese": 2055,
    "japanese": 2058,
    "french": 2061,
    "sichuan_dialect": 2062,
    "korean": 2064,
    "russian": 2069,
    "italian": 2070,
    "portuguese": 2071,
    "beijing_dialect": 2074,
}
# name: (codec id, spk_is_dialect)
SPEAKERS = {
    "vivian": (3065, False),
    "serena": (3066, False),
    "uncle_fu": (3010, False),
    "dylan": (2878, "beijing_dialect"),
    "eric": (2875, "sichuan_dialect"),
    "ryan": (3061, False),
    "aiden": (2861, False),
    "ono_anna": (2873, False),
    "sohee": (2864, False),
}

GENERATION_CONFIG = {
    "do_sample": True,
    "repetition_penalty": 1.05,
    "temperature": 0.9,
    "top_p": 1.0,
    "top_k": 50,
    "subtalker_dosample": True,
    "subtalker_temperature": 0.9,
    "subtalker_top_p": 1.0,
    "subtalker_top_k": 50,
    "max_new_tokens": 8192,
}

ROOT_PREPROCESSOR_CONFIG = {
    "padding_side": "left",
    "padding_value": 0.0,
    "processor_class": "Qwen3TTSProcessor",
    "return_attention_mask": True,
}

CODEC_PREPROCESSOR_CONFIG = {
    "chunk_length_s": None,
    "feature_extractor_type": "EncodecFeatureExtractor",
    "feature_size": 1,
    "overlap": None,
    "padding_side": "right",
    "padding_value": 0.0,
    "return_attention_mask": True,
    "sampling_rate": 24000,
}

# ---------------------------------------------------------------------------------------------
# Widths per preset
# ---------------------------------------------------------------------------------------------

_SPEAKER_REAL = {
    "mel_dim": 128,
    "enc_channels": [512, 512, 512, 512, 1536],
    "enc_kernel_sizes": [5, 3, 3, 3, 1],
    "enc_dilations": [1, 2, 3, 4, 1],
    "enc_attention_channels": 128,
    "enc_res2net_scale": 8,
    "enc_se_channels": 128,
    "sample_rate": 24000,
}
_PREDICTOR_REAL = {
    "hidden_size": 1024,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 3072,
}
_DECODER_REAL = {
    "hidden_size": 512,
    "latent_dim": 1024,
    "codebook_dim": 512,
    "vector_quantization_hidden_dimension": 512,
    "decoder_dim": 1536,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "head_dim": 64,
    "intermediate_size": 1024,
}
_MIMI_REAL = {
    "num_filters": 64,
    "hidden_size": 512,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "intermediate_size": 2048,
    "codebook_dim": 256,
    "vector_quantization_hidden_dimension": 256,
    "upsample_groups": 512,
}

_WIDTHS = {
    "tiny": {
        "talker": {
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 128,
        },
        "text_hidden_size": 64,
        # Narrower than the talker, so `small_to_mtp_projection` exists as in 1.7B.
        "predictor": {
            "hidden_size": 48,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 96,
        },
        "speaker": {
            "mel_dim": 128,
            "enc_channels": [32, 32, 32, 32, 96],
            "enc_kernel_sizes": [5, 3, 3, 3, 1],
            "enc_dilations": [1, 2, 3, 4, 1],
            "enc_attention_channels": 16,
            "enc_res2net_scale": 8,
            "enc_se_channels": 16,
            "sample_rate": 24000,
        },
        "decoder": {
            "hidden_size": 32,
            "latent_dim": 64,
            "codebook_dim": 32,
            "vector_quantization_hidden_dimension": 32,
            "decoder_dim": 64,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 64,
        },
        "mimi": {
            "num_filters": 8,
            "hidden_size": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "intermediate_size": 64,
            "codebook_dim": 16,
            "vector_quantization_hidden_dimension": 16,
            "upsample_groups": 32,
        },
        "model_size": "1b7",
    },
    "0.6b": {
        "talker": {
            "hidden_size": 1024,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "intermediate_size": 3072,
        },
        "text_hidden_size": 2048,
        "predictor": _PREDICTOR_REAL,
        "speaker": _SPEAKER_REAL,
        "decoder": _DECODER_REAL,
        "mimi": _MIMI_REAL,
        "model_size": "0b6",
    },
    "1.7b": {
        "talker": {
            "hidden_size": 2048,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "intermediate_size": 6144,
        },
        "text_hidden_size": 2048,
        "predictor": _PREDICTOR_REAL,
        "speaker": _SPEAKER_REAL,
        "decoder": _DECODER_REAL,
        "mimi": _MIMI_REAL,
        "model_size": "1b7",
    },
}
_DEFAULT_LAYERS = {"talker": 2, "predictor": 2, "codec": 2}
_MODEL_SIZES = {"0b6": "0b6", "0.6b": "0b6", "1b7": "1b7", "1.7b": "1b7"}


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(str, choices))}")


def _check_layers(name: str, value: int | None) -> int:
    if value is None:
        return _DEFAULT_LAYERS[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}_layers must be a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Toy byte-level BPE tokenizer
# ---------------------------------------------------------------------------------------------

# Training text for the toy merges: short, mixed, deterministic. Changing it changes every
# checkpoint's vocabulary (bump FORMAT_VERSION).
_CORPUS = """
Hello, world! This is a small test of the text to speech system. The quick brown fox jumps over
the lazy dog. She sells sea shells by the sea shore. How are you today? I am fine, thank you very
much. We are going to the park this afternoon, and then we will have dinner with our friends.
Please speak slowly and clearly, with a warm and friendly voice. Read the following sentence in a
calm tone: the weather is nice and the sun is shining. It was the best of times, it was the worst
of times. Good morning, good evening, good night. What time is it? It is ten past three. One, two,
three, four, five, six, seven, eight, nine, ten. The number is 1234567890. Speech synthesis turns
written text into spoken words. A happy young woman with a bright voice tells a story about a
little cat that lives in a big house near the river. An old man with a deep voice reads the news.
Welcome to the service. Your order has been confirmed and will arrive tomorrow. Thank you for
calling, please hold the line. The meeting starts at nine o'clock; don't be late. They're here,
we've seen them, you'll see, I'd say it's done.
Guten Morgen, wie geht es dir? Ich bin sehr gut, danke. Das Wetter ist heute schön.
Bonjour, comment allez-vous? Je vais très bien, merci. C'est une belle journée.
Hola, ¿cómo estás? Muy bien, gracias. Buenos días a todos.
Ciao, come stai? Bene, grazie. Olá, tudo bem? Obrigado.
Привет, как дела? Спасибо, хорошо.
你好，世界！今天天气很好。我们一起去公园吧。这是一个语音合成的测试。谢谢你的帮助。
こんにちは、元気ですか。ありがとうございます。
안녕하세요, 감사합니다.
"""
_FORCED_WORDS = ("assistant", "user")
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
_TEXT_VOCAB_TARGET = 1024  # byte symbols + merges + special tokens, when the corpus allows
# Approximates the Qwen2 pre-tokenizer, only to decide which merges to learn.
_PRETOKENIZE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+|\d| ?[^\s\w]+|\s+")


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes used by GPT-2 style byte-level BPE, in id order.

    Printable bytes map to themselves; the others are shifted to code points from 256 upwards.
    With this order "\\n" (byte 10) gets id 198 and " " (byte 32) the symbol "Ġ", as in Qwen2.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    order = printable + [b for b in range(256) if b not in printable]
    return [table[b] for b in order], table


def _to_symbols(text: str, table: dict[int, str]) -> tuple[str, ...]:
    return tuple(table[b] for b in text.encode("utf-8"))


def _apply_merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


@functools.lru_cache(maxsize=1)
def toy_tokenizer() -> dict:
    """The toy vocabulary: {"vocab": {token: id}, "merges": [(a, b)], "special": {token: id}}."""
    symbols, table = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols)}
    merges: list[tuple[str, str]] = []

    def add_merge(pair):
        merges.append(pair)
        vocab[pair[0] + pair[1]] = len(vocab)

    # Whole words first (lowest rank), built left to right, so they always come out as one token.
    for word in _FORCED_WORDS:
        parts = _to_symbols(word, table)
        current = parts[0]
        for nxt in parts[1:]:
            if current + nxt not in vocab:
                add_merge((current, nxt))
            current = current + nxt

    counts = Counter(_PRETOKENIZE.findall(_CORPUS))
    words = {}
    for piece, n in counts.items():
        if piece.isspace() and "\n" in piece:
            continue
        w = _to_symbols(piece, table)
        for pair in merges:
            w = _apply_merge(w, pair)
        words[w] = words.get(w, 0) + n

    n_merges = _TEXT_VOCAB_TARGET - len(SPECIAL_TOKENS) - 256
    while len(merges) < n_merges:
        pairs: Counter = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        pairs = {p: n for p, n in pairs.items() if p[0] + p[1] not in vocab}
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        add_merge(best)
        merged = {}
        for w, n in words.items():
            w2 = _apply_merge(w, best)
            merged[w2] = merged.get(w2, 0) + n
        words = merged

    special = {}
    for tok in SPECIAL_TOKENS:
        special[tok] = len(vocab) + len(special)
    return {"vocab": vocab, "merges": merges, "special": special}


def text_vocab_size() -> int:
    tok = toy_tokenizer()
    return len(tok["vocab"]) + len(tok["special"])


def _tokenizer_files() -> dict[str, str]:
    tok = toy_tokenizer()
    vocab_json = json.dumps(tok["vocab"], ensure_ascii=False, indent=2) + "\n"
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in tok["merges"])
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t, i in tok["special"].items()
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    return {
        "vocab.json": vocab_json,
        "merges.txt": merges_txt,
        "tokenizer_config.json": json.dumps(config, ensure_ascii=False, indent=2) + "\n",
    }


# ---------------------------------------------------------------------------------------------
# Config dicts
# ---------------------------------------------------------------------------------------------


def _decoder_stack(widths: dict, layers: int) -> dict:
    return {
        "hidden_size": widths["hidden_size"],
        "num_hidden_layers": layers,
        "num_attention_heads": widths["num_attention_heads"],
        "num_key_value_heads": widths["num_key_value_heads"],
        "head_dim": widths["head_dim"],
        "intermediate_size": widths["intermediate_size"],
    }


def build_config(
    model_type: str,
    preset: str = "tiny",
    *,
    talker_layers: int | None = None,
    predictor_layers: int | None = None,
    model_size: str | None = None,
) -> dict:
    """The top-level `config.json` dict of a checkpoint."""
    _check_choice("model_type", model_type, MODEL_TYPES)
    _check_choice("preset", preset, PRESETS)
    talker_layers = _check_layers("talker", talker_layers)
    predictor_layers = _check_layers("predictor", predictor_layers)
    w = _WIDTHS[preset]
    if model_size is None:
        size = w["model_size"]
    else:
        _check_choice("model_size", model_size, tuple(_MODEL_SIZES))
        size = _MODEL_SIZES[model_size]
    tok = toy_tokenizer()
    special = tok["special"]

    head_dim = w["talker"]["head_dim"]
    half = head_dim // 2
    # Real: [24, 20, 20] for head_dim 128 (sums to head_dim / 2); scaled alike for small heads.
    mrope = [24, 20, 20] if head_dim == 128 else [half - 2 * (half * 5 // 16), half * 5 // 16, half * 5 // 16]

    predictor = {
        "attention_bias": False,
        "attention_dropout": 0,
        **_decoder_stack(w["predictor"], predictor_layers),
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "layer_types": ["full_attention"] * predictor_layers,
        "max_position_embeddings": 65536,
        "max_window_layers": 28,
        "model_type": "qwen3_tts_talker_code_predictor",
        "num_code_groups": 16,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 2048,
    }
    spk_id, spk_dialect = {}, {}
    if model_type == "custom_voice":
        spk_id = {name: sid for name, (sid, _) in SPEAKERS.items()}
        spk_dialect = {name: dialect for name, (_, dialect) in SPEAKERS.items()}
    talker = {
        "attention_bias": False,
        "attention_dropout": 0,
        "code_predictor_config": predictor,
        **CODEC_IDS,
        "codec_language_id": dict(LANGUAGE_IDS),
        **_decoder_stack(w["talker"], talker_layers),
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 32768,
        "model_type": "qwen3_tts_talker",
        "num_code_groups": 16,
        "position_id_per_seconds": 13,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {
            "interleaved": True,
            "mrope_section": mrope,
            "rope_type": "default",
            "type": "default",
        },
        "rope_theta": 1000000,
        "sliding_window": None,
        "spk_id": spk_id,
        "spk_is_dialect": spk_dialect,
        "text_hidden_size": w["text_hidden_size"],
        "text_vocab_size": text_vocab_size(),
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": CODEC_VOCAB_SIZE,
    }
    config = {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "assistant_token_id": tok["vocab"]["assistant"],
        "im_end_token_id": special["<|im_end|>"],
        "im_start_token_id": special["<|im_start|>"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "transformers_version": "4.57.3",
        "tts_bos_token_id": special["<tts_text_bos>"],
        "tts_eos_token_id": special["<tts_text_eod>"],
        "tts_model_size": size,
        "tts_model_type": model_type,
        "tts_pad_token_id": special["<tts_pad>"],
        "talker_config": talker,
    }
    if model_type == "base":
        enc_dim = w["talker"]["hidden_size"]
        if preset == "tiny":
            # No "model_type" key: the reference's speaker-encoder config class rejects it on reload.
            config["speaker_encoder_config"] = {**w["speaker"], "enc_dim": enc_dim}
        else:
            # As released: only these two, the architecture comes from the class defaults.
            config["speaker_encoder_config"] = {"enc_dim": enc_dim, "sample_rate": 24000}
    return config


def build_codec_config(preset: str = "tiny", *, codec_layers: int | None = None) -> dict:
    """The `speech_tokenizer/config.json` dict."""
    _check_choice("preset", preset, PRESETS)
    layers = _check_layers("codec", codec_layers)
    dec = _WIDTHS[preset]["decoder"]
    mimi = _WIDTHS[preset]["mimi"]
    decoder_config = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "codebook_dim": dec["codebook_dim"],
        "codebook_size": 2048,
        "decoder_dim": dec["decoder_dim"],
        "head_dim": dec["head_dim"],
        "hidden_act": "silu",
        "hidden_size": dec["hidden_size"],
        "intermediate_size": dec["intermediate_size"],
        "latent_dim": dec["latent_dim"],
        "layer_scale_initial_scale": 0.01,
        "max_position_embeddings": 8000,
        "num_attention_heads": dec["num_attention_heads"],
        "num_hidden_layers": layers,
        "num_key_value_heads": dec["num_key_value_heads"],
        "num_quantizers": 16,
        "num_semantic_quantizers": 1,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000,
        "semantic_codebook_size": 4096,
        "sliding_window": 72,
        "upsample_rates": [8, 5, 4, 3],
        "upsampling_ratios": [2, 2],
        "vector_quantization_hidden_dimension": dec["vector_quantization_hidden_dimension"],
    }
    encoder_config = {
        "_frame_rate": 12.5,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "audio_channels": 1,
        "codebook_dim": mimi["codebook_dim"],
        "codebook_size": 2048,
        "compress": 2,
        "dilation_growth_rate": 2,
        "dtype": "float32",
        "head_dim": mimi["head_dim"],
        "hidden_act": "gelu",
        "hidden_size": mimi["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": mimi["intermediate_size"],
        "kernel_size": 7,
        "last_kernel_size": 3,
        "layer_scale_initial_scale": 0.01,
        "max_position_embeddings": 8000,
        "model_type": "mimi",
        "norm_eps": 1e-05,
        "num_attention_heads": mimi["num_attention_heads"],
        "num_filters": mimi["num_filters"],
        "num_hidden_layers": layers,
        "num_key_value_heads": mimi["num_key_value_heads"],
        "num_quantizers": 32,
        "num_residual_layers": 1,
        "num_semantic_quantizers": 1,
        "pad_mode": "constant",
        "residual_kernel_size": 3,
        "rope_theta": 10000.0,
        "sampling_rate": 24000,
        "sliding_window": 250,
        "trim_right_ratio": 1.0,
        "upsample_groups": mimi["upsample_groups"],
        "upsampling_ratios": [8, 6, 5, 4],
        "use_cache": False,
        "use_causal_conv": True,
        "use_conv_shortcut": False,
        "use_streaming": False,
        "vector_quantization_hidden_dimension": mimi["vector_quantization_hidden_dimension"],
    }
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": 16,
        "input_sample_rate": 24000,
        "output_sample_rate": 24000,
        "decode_upsample_rate": 1920,
        "encode_downsample_rate": 1920,
        "transformers_version": "4.57.3",
        "decoder_config": decoder_config,
        "encoder_config": encoder_config,
    }


# ---------------------------------------------------------------------------------------------
# Tensor specs: (key, shape, init) where init is a tuple describing the random distribution
# ---------------------------------------------------------------------------------------------
#   ("normal", std)              N(0, std^2)
#   ("around", center, std)      center + N(0, std^2)       norm weights ~1, layer scales ~0.01
#   ("const", value)             filled
#   ("codebook_usage",)          uniform in [0.5, 2): positive cluster usage
#   ("codebook_sum", std, usage_key)  N(0, std^2) * usage[:, None], so sum / usage ~ N(0, std^2)

_NORM = ("around", 1.0, 0.1)
_BIAS = ("normal", 0.02)
_LAYER_SCALE = ("around", 0.01, 0.001)
_SNAKE = ("normal", 0.1)


def _linear(key: str, fan_out: int, fan_in: int, gain: float = 1.0, bias: bool = False):
    out = [(f"{key}.weight", (fan_out, fan_in), ("normal", gain / math.sqrt(fan_in)))]
    if bias:
        out.append((f"{key}.bias", (fan_out,), _BIAS))
    return out


def _conv(key: str, c_out: int, c_in: int, k: int, gain: float = 1.0, bias: bool = True, groups: int = 1):
    fan_in = c_in // groups * k
    out = [(f"{key}.weight", (c_out, c_in // groups, k), ("normal", gain / math.sqrt(fan_in)))]
    if bias:
        out.append((f"{key}.bias", (c_out,), _BIAS))
    return out


def _conv_transpose(key: str, c_in: int, c_out: int, k: int, stride: int, gain: float = 1.0):
    # Each output sample sums c_in * k / stride products.
    std = gain / math.sqrt(c_in * k / stride)
    return [(f"{key}.weight", (c_in, c_out, k), ("normal", std)), (f"{key}.bias", (c_out,), _BIAS)]


def _qwen3_layers(prefix: str, cfg: dict, hidden: int):
    specs = []
    heads, kv, hd, inter = (
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["head_dim"],
        cfg["intermediate_size"],
    )
    for i in range(cfg["num_hidden_layers"]):
        p = f"{prefix}.layers.{i}"
        specs += [(f"{p}.input_layernorm.weight", (hidden,), _NORM)]
        specs += _linear(f"{p}.self_attn.q_proj", heads * hd, hidden)
        specs += _linear(f"{p}.self_attn.k_proj", kv * hd, hidden)
        specs += _linear(f"{p}.self_attn.v_proj", kv * hd, hidden)
        specs += _linear(f"{p}.self_attn.o_proj", hidden, heads * hd)
        specs += [(f"{p}.self_attn.q_norm.weight", (hd,), _NORM)]
        specs += [(f"{p}.self_attn.k_norm.weight", (hd,), _NORM)]
        specs += [(f"{p}.post_attention_layernorm.weight", (hidden,), _NORM)]
        specs += _linear(f"{p}.mlp.gate_proj", inter, hidden)
        specs += _linear(f"{p}.mlp.up_proj", inter, hidden)
        specs += _linear(f"{p}.mlp.down_proj", hidden, inter)
    specs += [(f"{prefix}.norm.weight", (hidden,), _NORM)]
    return specs


def _speaker_encoder_specs(cfg: dict, enc_dim: int):
    full = {**_SPEAKER_REAL, **cfg}
    ch, ks = full["enc_channels"], full["enc_kernel_sizes"]
    scale, se, att = full["enc_res2net_scale"], full["enc_se_channels"], full["enc_attention_channels"]
    relu = math.sqrt(2.0)
    specs = _conv("speaker_encoder.blocks.0.conv", ch[0], full["mel_dim"], ks[0], gain=relu / 4)
    for i in range(1, len(ch) - 1):
        p = f"speaker_encoder.blocks.{i}"
        c_in, c = ch[i - 1], ch[i]
        specs += _conv(f"{p}.tdnn1.conv", c, c_in, 1, gain=relu)
        for j in range(scale - 1):
            specs += _conv(f"{p}.res2net_block.blocks.{j}.conv", c // scale, c // scale, ks[i], gain=relu)
        specs += _conv(f"{p}.tdnn2.conv", c, c, 1, gain=relu)
        specs += _conv(f"{p}.se_block.conv1", se, c, 1, gain=relu)
        specs += _conv(f"{p}.se_block.conv2", c, se, 1)
    mfa_in = sum(ch[1:-1])
    specs += _conv("speaker_encoder.mfa.conv", ch[-1], mfa_in, ks[-1], gain=relu)
    specs += _conv("speaker_encoder.asp.tdnn.conv", att, ch[-1] * 3, 1, gain=relu)
    specs += _conv("speaker_encoder.asp.conv", ch[-1], att, 1)
    specs += _conv("speaker_encoder.fc", enc_dim, ch[-1] * 2, 1)
    return specs


def main_tensor_specs(config: dict):
    """(key, shape, init) for every tensor of the main `model.safetensors` of `config`."""
    t = config["talker_config"]
    p = t["code_predictor_config"]
    hidden, text_hidden = t["hidden_size"], t["text_hidden_size"]
    specs = [
        ("talker.model.text_embedding.weight", (t["text_vocab_size"], text_hidden), ("normal", 1.0)),
        ("talker.model.codec_embedding.weight", (t["vocab_size"], hidden), ("normal", 1.0)),
    ]
    specs += _qwen3_layers("talker.model", t, hidden)
    specs += _linear("talker.text_projection.linear_fc1", text_hidden, text_hidden, bias=True)
    specs += _linear("talker.text_projection.linear_fc2", hidden, text_hidden, bias=True)
    specs += _linear("talker.codec_head", t["vocab_size"], hidden)
    groups = t["num_code_groups"]
    if p["hidden_size"] != hidden:
        specs += _linear("talker.code_predictor.small_to_mtp_projection", p["hidden_size"], hidden, bias=True)
    for j in range(groups - 1):
        specs += [
            (f"talker.code_predictor.model.codec_embedding.{j}.weight", (p["vocab_size"], hidden), ("normal", 1.0))
        ]
    specs += _qwen3_layers("talker.code_predictor.model", p, p["hidden_size"])
    for j in range(groups - 1):
        specs += _linear(f"talker.code_predictor.lm_head.{j}", p["vocab_size"], p["hidden_size"])
    if config["tts_model_type"] == "base":
        specs += _speaker_encoder_specs(config["speaker_encoder_config"], config["speaker_encoder_config"]["enc_dim"])
    return specs


# Scales of the codec, tuned so random weights give a waveform of moderate level (mostly inside
# [-1, 1]) and Mimi codebooks whose nearest-neighbour choice varies with the input.
_CODEBOOK_STD_DECODER = 1.0
_MIMI_CODEBOOK_STD = 0.15
_DECODER_OUT_GAIN = 0.1


def _decoder_specs(cfg: dict):
    specs = []
    q = "decoder.quantizer"
    cb, half = cfg["codebook_dim"], cfg["codebook_dim"] // 2
    for name, n in (("rvq_first", 1), ("rvq_rest", cfg["num_quantizers"] - 1)):
        specs += _conv(f"{q}.{name}.input_proj", half, cb, 1, bias=False)
        specs += _conv(f"{q}.{name}.output_proj", cb, half, 1, bias=False, gain=1.0 / math.sqrt(n))
        for j in range(n):
            c = f"{q}.{name}.vq.layers.{j}._codebook"
            specs += [
                (f"{c}.cluster_usage", (cfg["codebook_size"],), ("codebook_usage",)),
                (
                    f"{c}.embedding_sum",
                    (cfg["codebook_size"], half),
                    ("codebook_sum", _CODEBOOK_STD_DECODER, f"{c}.cluster_usage"),
                ),
            ]
    latent, hidden = cfg["latent_dim"], cfg["hidden_size"]
    specs += _conv("decoder.pre_conv.conv", latent, cb, 3)
    pt = "decoder.pre_transformer"
    specs += _linear(f"{pt}.input_proj", hidden, latent, bias=True)
    heads, kv, hd, inter = (
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["head_dim"],
        cfg["intermediate_size"],
    )
    for i in range(cfg["num_hidden_layers"]):
        p = f"{pt}.layers.{i}"
        specs += [(f"{p}.input_layernorm.weight", (hidden,), _NORM)]
        specs += _linear(f"{p}.self_attn.q_proj", heads * hd, hidden)
        specs += _linear(f"{p}.self_attn.k_proj", kv * hd, hidden)
        specs += _linear(f"{p}.self_attn.v_proj", kv * hd, hidden)
        specs += _linear(f"{p}.self_attn.o_proj", hidden, heads * hd)
        specs += [(f"{p}.post_attention_layernorm.weight", (hidden,), _NORM)]
        specs += _linear(f"{p}.mlp.gate_proj", inter, hidden)
        specs += _linear(f"{p}.mlp.up_proj", inter, hidden)
        specs += _linear(f"{p}.mlp.down_proj", hidden, inter)
        specs += [(f"{p}.self_attn_layer_scale.scale", (hidden,), _LAYER_SCALE)]
        specs += [(f"{p}.mlp_layer_scale.scale", (hidden,), _LAYER_SCALE)]
    specs += [(f"{pt}.norm.weight", (hidden,), _NORM)]
    specs += _linear(f"{pt}.output_proj", latent, hidden, bias=True)
    for i, factor in enumerate(cfg["upsampling_ratios"]):
        p = f"decoder.upsample.{i}"
        specs += _conv_transpose(f"{p}.0.conv", latent, latent, factor, factor)
        specs += _conv(f"{p}.1.dwconv.conv", latent, latent, 7, groups=latent)
        specs += [(f"{p}.1.norm.weight", (latent,), _NORM), (f"{p}.1.norm.bias", (latent,), _BIAS)]
        specs += _linear(f"{p}.1.pwconv1", 4 * latent, latent, bias=True)
        specs += _linear(f"{p}.1.pwconv2", latent, 4 * latent, bias=True)
        specs += [(f"{p}.1.gamma", (latent,), _LAYER_SCALE)]
    dim = cfg["decoder_dim"]
    specs += _conv("decoder.decoder.0.conv", dim, latent, 7)
    for i, rate in enumerate(cfg["upsample_rates"]):
        p = f"decoder.decoder.{i + 1}.block"
        c_in, c_out = dim // 2**i, dim // 2 ** (i + 1)
        specs += [(f"{p}.0.alpha", (c_in,), _SNAKE), (f"{p}.0.beta", (c_in,), _SNAKE)]
        specs += _conv_transpose(f"{p}.1.conv", c_in, c_out, 2 * rate, rate)
        for j in range(3):
            r = f"{p}.{j + 2}"
            specs += [(f"{r}.act1.alpha", (c_out,), _SNAKE), (f"{r}.act1.beta", (c_out,), _SNAKE)]
            specs += _conv(f"{r}.conv1.conv", c_out, c_out, 7, gain=0.5)
            specs += [(f"{r}.act2.alpha", (c_out,), _SNAKE), (f"{r}.act2.beta", (c_out,), _SNAKE)]
            specs += _conv(f"{r}.conv2.conv", c_out, c_out, 1, gain=0.5)
    n = len(cfg["upsample_rates"])
    out_dim = dim // 2**n
    specs += [
        (f"decoder.decoder.{n + 1}.alpha", (out_dim,), _SNAKE),
        (f"decoder.decoder.{n + 1}.beta", (out_dim,), _SNAKE),
    ]
    specs += _conv(f"decoder.decoder.{n + 2}.conv", 1, out_dim, 7, gain=_DECODER_OUT_GAIN)
    return specs


def _mimi_specs(cfg: dict):
    specs = []
    nf, ratios = cfg["num_filters"], cfg["upsampling_ratios"]
    k, rk, lk = cfg["kernel_size"], cfg["residual_kernel_size"], cfg["last_kernel_size"]
    e = "encoder.encoder.layers"
    specs += _conv(f"{e}.0.conv", nf, cfg["audio_channels"], k)
    idx, mult = 1, 1
    for ratio in reversed(ratios):
        c = mult * nf
        for _ in range(cfg["num_residual_layers"]):
            specs += _conv(f"{e}.{idx}.block.1.conv", c // cfg["compress"], c, rk)
            specs += _conv(f"{e}.{idx}.block.3.conv", c, c // cfg["compress"], 1, gain=0.5)
            idx += 1
        idx += 1  # ELU
        specs += _conv(f"{e}.{idx}.conv", 2 * c, c, 2 * ratio)
        idx += 1
        mult *= 2
    idx += 1  # ELU
    specs += _conv(f"{e}.{idx}.conv", cfg["hidden_size"], mult * nf, lk)
    hidden, heads, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, inter = cfg["head_dim"], cfg["intermediate_size"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.encoder_transformer.layers.{i}"
        specs += _linear(f"{p}.self_attn.q_proj", heads * hd, hidden)
        specs += _linear(f"{p}.self_attn.k_proj", kv * hd, hidden)
        specs += _linear(f"{p}.self_attn.v_proj", kv * hd, hidden)
        specs += _linear(f"{p}.self_attn.o_proj", hidden, heads * hd)
        specs += _linear(f"{p}.mlp.fc1", inter, hidden)
        specs += _linear(f"{p}.mlp.fc2", hidden, inter)
        specs += [(f"{p}.input_layernorm.weight", (hidden,), _NORM), (f"{p}.input_layernorm.bias", (hidden,), _BIAS)]
        specs += [
            (f"{p}.post_attention_layernorm.weight", (hidden,), _NORM),
            (f"{p}.post_attention_layernorm.bias", (hidden,), _BIAS),
        ]
        specs += [(f"{p}.self_attn_layer_scale.scale", (hidden,), _LAYER_SCALE)]
        specs += [(f"{p}.mlp_layer_scale.scale", (hidden,), _LAYER_SCALE)]
    encodec_rate = math.ceil(cfg["sampling_rate"] / math.prod(ratios))
    specs += _conv("encoder.downsample.conv", hidden, hidden, 2 * int(encodec_rate / cfg["_frame_rate"]), bias=False)
    vq, cdim = cfg["vector_quantization_hidden_dimension"], cfg["codebook_dim"]
    n_sem = cfg["num_semantic_quantizers"]
    for name, n in (
        ("semantic_residual_vector_quantizer", n_sem),
        ("acoustic_residual_vector_quantizer", cfg["num_quantizers"] - n_sem),
    ):
        p = f"encoder.quantizer.{name}"
        for j in range(n):
            c = f"{p}.layers.{j}.codebook"
            specs += [
                (f"{c}.initialized", (1,), ("const", 1.0)),
                (f"{c}.cluster_usage", (cfg["codebook_size"],), ("codebook_usage",)),
                (
                    f"{c}.embed_sum",
                    (cfg["codebook_size"], cdim),
                    ("codebook_sum", _MIMI_CODEBOOK_STD, f"{c}.cluster_usage"),
                ),
            ]
        if vq != hidden:
            specs += _conv(f"{p}.input_proj", vq, hidden, 1, bias=False)
            specs += _conv(f"{p}.output_proj", hidden, vq, 1, bias=False)
    return specs


def codec_tensor_specs(codec_config: dict):
    """(key, shape, init) for every tensor of `speech_tokenizer/model.safetensors`."""
    return _decoder_specs(codec_config["decoder_config"]) + _mimi_specs(codec_config["encoder_config"])


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _generator(seed: int, key: str) -> torch.Generator:
    """A generator per tensor, so a tensor's values do not depend on which other tensors exist."""
    digest = hashlib.sha256(f"qwen3-tts-tiny:{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def _materialise(specs, seed: int, dtype: torch.dtype, adjust: dict | None = None) -> dict[str, torch.Tensor]:
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


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o644)  # safetensors creates the file 0600; others (services, tests) read it


def _write_codec_files(out_dir: Path, preset: str, seed: int, codec_layers: int | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    config = build_codec_config(preset, codec_layers=codec_layers)
    tensors = _materialise(codec_tensor_specs(config), seed, torch.float32)
    _save_tensors(tensors, out_dir / "model.safetensors")
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "preprocessor_config.json", CODEC_PREPROCESSOR_CONFIG)


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
    _check_choice("dtype", dtype, tuple(_DTYPES))
    out_dir = Path(out_dir)
    config = build_config(
        model_type, preset, talker_layers=talker_layers, predictor_layers=predictor_layers, model_size=model_size
    )
    build_codec_config(preset, codec_layers=codec_layers)  # validate before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)

    def scale_eos(head: torch.Tensor) -> torch.Tensor:
        head[CODEC_EOS_ID] = head[CODEC_EOS_ID] * float(eos_scale)
        return head

    tensors = _materialise(
        main_tensor_specs(config), seed, _DTYPES[dtype], adjust={"talker.codec_head.weight": scale_eos}
    )
    _save_tensors(tensors, out_dir / "model.safetensors")
    del tensors
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", GENERATION_CONFIG)
    _write_json(out_dir / "preprocessor_config.json", ROOT_PREPROCESSOR_CONFIG)
    for name, text in _tokenizer_files().items():
        (out_dir / name).write_text(text, encoding="utf-8")
    _write_codec_files(out_dir / "speech_tokenizer", preset, seed, codec_layers)
    return out_dir


# ---------------------------------------------------------------------------------------------
# The zero-configuration default
# ---------------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


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
    _check_choice("model_type", model_type, MODEL_TYPES)
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
                _write_json(tmp / COMPLETE_MARKER, expected)
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


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


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
    parser.add_argument("--model-size", choices=sorted(_MODEL_SIZES))
    parser.add_argument("--eos-scale", type=float, default=0.0)
    parser.add_argument("--dtype", choices=tuple(_DTYPES), default="bfloat16")
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
