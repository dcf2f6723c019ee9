"""Model types, presets and the layer widths of each preset.

  "tiny"          small widths (talker hidden 64) for fast tests; codec strides, quantizer counts,
                  codebook sizes, sliding window and all special ids are the real ones.
  "0.6b", "1.7b"  the real widths of those models.

Layer counts are not part of a preset: they come from the writer's arguments (default 2 talker,
2 predictor and 2 codec layers; the benchmark passes 28/5/8 for a full-depth model).
"""

from __future__ import annotations

MODEL_TYPES = ("base", "custom_voice", "voice_design")
PRESETS = ("tiny", "0.6b", "1.7b")

# The released widths. The speaker encoder's are also its config class defaults, which the
# real-width presets rely on (their config.json names only enc_dim and sample_rate).
SPEAKER_ENCODER_REAL = {
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
_MIMI_ENCODER_REAL = {
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

# preset -> widths of each part: "talker" and "predictor" (code predictor) are Qwen3 decoder stacks,
# "speaker" the base model's speaker encoder, "decoder" and "mimi" the codec's decoder and encoder;
# "model_size" is the config's default `tts_model_size`.
WIDTHS = {
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
        "speaker": SPEAKER_ENCODER_REAL,
        "decoder": _DECODER_REAL,
        "mimi": _MIMI_ENCODER_REAL,
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
        "speaker": SPEAKER_ENCODER_REAL,
        "decoder": _DECODER_REAL,
        "mimi": _MIMI_ENCODER_REAL,
        "model_size": "1b7",
    },
}
_DEFAULT_LAYERS = {"talker": 2, "predictor": 2, "codec": 2}
# Accepted spellings of `model_size` -> the `tts_model_size` written to config.json.
MODEL_SIZES = {"0b6": "0b6", "0.6b": "0b6", "1b7": "1b7", "1.7b": "1b7"}


def check_choice(name: str, value, choices) -> None:
    """ValueError naming the choices unless `value` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(str, choices))}")


def check_layers(name: str, value: int | None) -> int:
    """The layer count of part `name` ("talker", "predictor", "codec"): the default for None."""
    if value is None:
        return _DEFAULT_LAYERS[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}_layers must be a positive integer, got {value!r}")
    return value
