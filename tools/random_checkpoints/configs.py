"""The JSON configuration files of a checkpoint, as dicts.

`build_config` gives the top-level config.json and `build_codec_config` speech_tokenizer/config.json,
with the keys and values of a released `Qwen/Qwen3-TTS-12Hz-*` directory except the widths (from
the preset), the layer counts (from the arguments) and the text-token ids (from the toy tokenizer).
The other files (generation and preprocessor configs) are the released ones, as constants.
"""

from __future__ import annotations

from .ids import CODEC_IDS, CODEC_VOCAB_SIZE, LANGUAGE_IDS, SPEAKERS
from .presets import MODEL_SIZES, MODEL_TYPES, PRESETS, WIDTHS, check_choice, check_layers
from .text_tokenizer import text_vocab_size, toy_tokenizer

# generation_config.json
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

# preprocessor_config.json of the TTS checkpoint
ROOT_PREPROCESSOR_CONFIG = {
    "padding_side": "left",
    "padding_value": 0.0,
    "processor_class": "Qwen3TTSProcessor",
    "return_attention_mask": True,
}

# preprocessor_config.json of the codec (speech_tokenizer/)
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


def _decoder_stack(widths: dict, layers: int) -> dict:
    """The size keys of a Qwen3 decoder stack (talker or code predictor)."""
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
    check_choice("model_type", model_type, MODEL_TYPES)
    check_choice("preset", preset, PRESETS)
    talker_layers = check_layers("talker", talker_layers)
    predictor_layers = check_layers("predictor", predictor_layers)
    w = WIDTHS[preset]
    if model_size is None:
        size = w["model_size"]
    else:
        check_choice("model_size", model_size, tuple(MODEL_SIZES))
        size = MODEL_SIZES[model_size]
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
    check_choice("preset", preset, PRESETS)
    layers = check_layers("codec", codec_layers)
    dec = WIDTHS[preset]["decoder"]
    mimi = WIDTHS[preset]["mimi"]
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
