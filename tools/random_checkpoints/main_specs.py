"""Tensor specs of the main `model.safetensors`: talker, code predictor and speaker encoder.

Names and shapes are computed from the config.json dict (spec §9.3), never from a model class;
tests/tools/test_random_checkpoints.py checks them against the reference package's classes.
"""

from __future__ import annotations

import math

from .presets import SPEAKER_ENCODER_REAL
from .spec_blocks import NORM, attention_projections, conv, gated_mlp, linear


def _qwen3_layers(prefix: str, cfg: dict, hidden: int):
    """The decoder layers and final norm of a Qwen3 stack (the talker or the code predictor)."""
    specs = []
    hd = cfg["head_dim"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"{prefix}.layers.{i}"
        specs += [(f"{p}.input_layernorm.weight", (hidden,), NORM)]
        specs += attention_projections(f"{p}.self_attn", cfg, hidden)
        specs += [(f"{p}.self_attn.q_norm.weight", (hd,), NORM)]
        specs += [(f"{p}.self_attn.k_norm.weight", (hd,), NORM)]
        specs += [(f"{p}.post_attention_layernorm.weight", (hidden,), NORM)]
        specs += gated_mlp(f"{p}.mlp", hidden, cfg["intermediate_size"])
    specs += [(f"{prefix}.norm.weight", (hidden,), NORM)]
    return specs


def _speaker_encoder_specs(cfg: dict):
    """The ECAPA-TDNN speaker encoder of the base model; `cfg` is `speaker_encoder_config`."""
    full = {**SPEAKER_ENCODER_REAL, **cfg}
    ch, ks = full["enc_channels"], full["enc_kernel_sizes"]
    scale, se, att = full["enc_res2net_scale"], full["enc_se_channels"], full["enc_attention_channels"]
    relu = math.sqrt(2.0)
    specs = conv("speaker_encoder.blocks.0.conv", ch[0], full["mel_dim"], ks[0], gain=relu / 4)
    for i in range(1, len(ch) - 1):
        p = f"speaker_encoder.blocks.{i}"
        c_in, c = ch[i - 1], ch[i]
        specs += conv(f"{p}.tdnn1.conv", c, c_in, 1, gain=relu)
        for j in range(scale - 1):
            specs += conv(f"{p}.res2net_block.blocks.{j}.conv", c // scale, c // scale, ks[i], gain=relu)
        specs += conv(f"{p}.tdnn2.conv", c, c, 1, gain=relu)
        specs += conv(f"{p}.se_block.conv1", se, c, 1, gain=relu)
        specs += conv(f"{p}.se_block.conv2", c, se, 1)
    mfa_in = sum(ch[1:-1])
    specs += conv("speaker_encoder.mfa.conv", ch[-1], mfa_in, ks[-1], gain=relu)
    specs += conv("speaker_encoder.asp.tdnn.conv", att, ch[-1] * 3, 1, gain=relu)
    specs += conv("speaker_encoder.asp.conv", ch[-1], att, 1)
    specs += conv("speaker_encoder.fc", full["enc_dim"], ch[-1] * 2, 1)
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
    specs += linear("talker.text_projection.linear_fc1", text_hidden, text_hidden, bias=True)
    specs += linear("talker.text_projection.linear_fc2", hidden, text_hidden, bias=True)
    specs += linear("talker.codec_head", t["vocab_size"], hidden)
    groups = t["num_code_groups"]
    if p["hidden_size"] != hidden:
        specs += linear("talker.code_predictor.small_to_mtp_projection", p["hidden_size"], hidden, bias=True)
    for j in range(groups - 1):
        specs += [
            (f"talker.code_predictor.model.codec_embedding.{j}.weight", (p["vocab_size"], hidden), ("normal", 1.0))
        ]
    specs += _qwen3_layers("talker.code_predictor.model", p, p["hidden_size"])
    for j in range(groups - 1):
        specs += linear(f"talker.code_predictor.lm_head.{j}", p["vocab_size"], p["hidden_size"])
    if config["tts_model_type"] == "base":
        specs += _speaker_encoder_specs(config["speaker_encoder_config"])
    return specs
