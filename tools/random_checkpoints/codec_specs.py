"""Tensor specs of the codec's `model.safetensors` (speech_tokenizer/, Qwen3-TTS-Tokenizer-12Hz).

The codec is a decoder (codes -> waveform: split residual VQ, a transformer, ConvNeXt upsampling
and a SnakeBeta vocoder) and a Mimi encoder (waveform -> codes). Names and shapes are computed from
speech_tokenizer/config.json (spec §9.4).
"""

from __future__ import annotations

import math

from .spec_blocks import (
    LAYER_SCALE,
    NORM,
    attention_projections,
    conv,
    conv_transpose,
    gated_mlp,
    layer_norm,
    layer_scales,
    linear,
    snake,
)

# Scales of the codec, tuned so random weights give a waveform of moderate level (mostly inside
# [-1, 1]) and Mimi codebooks whose nearest-neighbour choice varies with the input.
_DECODER_CODEBOOK_STD = 1.0
_MIMI_CODEBOOK_STD = 0.15
_DECODER_OUT_GAIN = 0.1


def _codebook(prefix: str, size: int, dim: int, std: float, sum_name: str):
    """A VQ codebook stored as cluster usage and the sum of the vectors assigned to each code."""
    usage = f"{prefix}.cluster_usage"
    return [(usage, (size,), ("codebook_usage",)), (f"{prefix}.{sum_name}", (size, dim), ("codebook_sum", std, usage))]


def _decoder_specs(cfg: dict):
    """The codec decoder; `cfg` is `decoder_config`."""
    specs = []
    q = "decoder.quantizer"
    cb, half = cfg["codebook_dim"], cfg["codebook_dim"] // 2
    for name, n in (("rvq_first", 1), ("rvq_rest", cfg["num_quantizers"] - 1)):
        specs += conv(f"{q}.{name}.input_proj", half, cb, 1, bias=False)
        specs += conv(f"{q}.{name}.output_proj", cb, half, 1, bias=False, gain=1.0 / math.sqrt(n))
        for j in range(n):
            specs += _codebook(
                f"{q}.{name}.vq.layers.{j}._codebook",
                cfg["codebook_size"],
                half,
                _DECODER_CODEBOOK_STD,
                "embedding_sum",
            )
    latent, hidden = cfg["latent_dim"], cfg["hidden_size"]
    specs += conv("decoder.pre_conv.conv", latent, cb, 3)
    pt = "decoder.pre_transformer"
    specs += linear(f"{pt}.input_proj", hidden, latent, bias=True)
    for i in range(cfg["num_hidden_layers"]):
        p = f"{pt}.layers.{i}"
        specs += [(f"{p}.input_layernorm.weight", (hidden,), NORM)]
        specs += attention_projections(f"{p}.self_attn", cfg, hidden)
        specs += [(f"{p}.post_attention_layernorm.weight", (hidden,), NORM)]
        specs += gated_mlp(f"{p}.mlp", hidden, cfg["intermediate_size"])
        specs += layer_scales(p, hidden)
    specs += [(f"{pt}.norm.weight", (hidden,), NORM)]
    specs += linear(f"{pt}.output_proj", latent, hidden, bias=True)
    for i, factor in enumerate(cfg["upsampling_ratios"]):
        p = f"decoder.upsample.{i}"
        specs += conv_transpose(f"{p}.0.conv", latent, latent, factor, factor)
        specs += conv(f"{p}.1.dwconv.conv", latent, latent, 7, groups=latent)
        specs += layer_norm(f"{p}.1.norm", latent)
        specs += linear(f"{p}.1.pwconv1", 4 * latent, latent, bias=True)
        specs += linear(f"{p}.1.pwconv2", latent, 4 * latent, bias=True)
        specs += [(f"{p}.1.gamma", (latent,), LAYER_SCALE)]
    dim = cfg["decoder_dim"]
    specs += conv("decoder.decoder.0.conv", dim, latent, 7)
    for i, rate in enumerate(cfg["upsample_rates"]):
        p = f"decoder.decoder.{i + 1}.block"
        c_in, c_out = dim // 2**i, dim // 2 ** (i + 1)
        specs += snake(f"{p}.0", c_in)
        specs += conv_transpose(f"{p}.1.conv", c_in, c_out, 2 * rate, rate)
        for j in range(3):
            r = f"{p}.{j + 2}"
            specs += snake(f"{r}.act1", c_out)
            specs += conv(f"{r}.conv1.conv", c_out, c_out, 7, gain=0.5)
            specs += snake(f"{r}.act2", c_out)
            specs += conv(f"{r}.conv2.conv", c_out, c_out, 1, gain=0.5)
    n = len(cfg["upsample_rates"])
    out_dim = dim // 2**n
    specs += snake(f"decoder.decoder.{n + 1}", out_dim)
    specs += conv(f"decoder.decoder.{n + 2}.conv", 1, out_dim, 7, gain=_DECODER_OUT_GAIN)
    return specs


def _mimi_specs(cfg: dict):
    """The Mimi encoder; `cfg` is `encoder_config`."""
    specs = []
    nf, ratios = cfg["num_filters"], cfg["upsampling_ratios"]
    k, rk, lk = cfg["kernel_size"], cfg["residual_kernel_size"], cfg["last_kernel_size"]
    e = "encoder.encoder.layers"
    specs += conv(f"{e}.0.conv", nf, cfg["audio_channels"], k)
    idx, mult = 1, 1
    for ratio in reversed(ratios):
        c = mult * nf
        for _ in range(cfg["num_residual_layers"]):
            specs += conv(f"{e}.{idx}.block.1.conv", c // cfg["compress"], c, rk)
            specs += conv(f"{e}.{idx}.block.3.conv", c, c // cfg["compress"], 1, gain=0.5)
            idx += 1
        idx += 1  # ELU
        specs += conv(f"{e}.{idx}.conv", 2 * c, c, 2 * ratio)
        idx += 1
        mult *= 2
    idx += 1  # ELU
    specs += conv(f"{e}.{idx}.conv", cfg["hidden_size"], mult * nf, lk)
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.encoder_transformer.layers.{i}"
        specs += attention_projections(f"{p}.self_attn", cfg, hidden)
        specs += linear(f"{p}.mlp.fc1", inter, hidden)
        specs += linear(f"{p}.mlp.fc2", hidden, inter)
        specs += layer_norm(f"{p}.input_layernorm", hidden)
        specs += layer_norm(f"{p}.post_attention_layernorm", hidden)
        specs += layer_scales(p, hidden)
    encodec_rate = math.ceil(cfg["sampling_rate"] / math.prod(ratios))
    specs += conv("encoder.downsample.conv", hidden, hidden, 2 * int(encodec_rate / cfg["_frame_rate"]), bias=False)
    vq, cdim = cfg["vector_quantization_hidden_dimension"], cfg["codebook_dim"]
    n_sem = cfg["num_semantic_quantizers"]
    for name, n in (
        ("semantic_residual_vector_quantizer", n_sem),
        ("acoustic_residual_vector_quantizer", cfg["num_quantizers"] - n_sem),
    ):
        p = f"encoder.quantizer.{name}"
        for j in range(n):
            c = f"{p}.layers.{j}.codebook"
            specs += [(f"{c}.initialized", (1,), ("const", 1.0))]
            specs += _codebook(c, cfg["codebook_size"], cdim, _MIMI_CODEBOOK_STD, "embed_sum")
        if vq != hidden:
            specs += conv(f"{p}.input_proj", vq, hidden, 1, bias=False)
            specs += conv(f"{p}.output_proj", hidden, vq, 1, bias=False)
    return specs


def codec_tensor_specs(codec_config: dict):
    """(key, shape, init) for every tensor of `speech_tokenizer/model.safetensors`."""
    return _decoder_specs(codec_config["decoder_config"]) + _mimi_specs(codec_config["encoder_config"])
