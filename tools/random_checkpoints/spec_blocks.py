"""Tensor specs and the building blocks shared by the main model and the codec.

A checkpoint's weights are described before any number is drawn, as a list of specs
`(key, shape, init)`: the safetensors key, the shape, and a tuple naming the random distribution.

  ("normal", std)                   N(0, std^2)
  ("around", center, std)           center + N(0, std^2): norm weights ~1, layer scales ~0.01
  ("const", value)                  filled with value
  ("codebook_usage",)               uniform in [0.5, 2): positive cluster usage
  ("codebook_sum", std, usage_key)  N(0, std^2) * usage[:, None], so sum / usage ~ N(0, std^2);
                                    the spec of `usage_key` must come earlier in the list

Weight stds are gain / sqrt(fan_in), so activations keep their scale through random layers.
"""

from __future__ import annotations

import math

NORM = ("around", 1.0, 0.1)
BIAS = ("normal", 0.02)
LAYER_SCALE = ("around", 0.01, 0.001)
SNAKE = ("normal", 0.1)


def linear(key: str, fan_out: int, fan_in: int, gain: float = 1.0, bias: bool = False):
    out = [(f"{key}.weight", (fan_out, fan_in), ("normal", gain / math.sqrt(fan_in)))]
    if bias:
        out.append((f"{key}.bias", (fan_out,), BIAS))
    return out


def conv(key: str, c_out: int, c_in: int, k: int, gain: float = 1.0, bias: bool = True, groups: int = 1):
    fan_in = c_in // groups * k
    out = [(f"{key}.weight", (c_out, c_in // groups, k), ("normal", gain / math.sqrt(fan_in)))]
    if bias:
        out.append((f"{key}.bias", (c_out,), BIAS))
    return out


def conv_transpose(key: str, c_in: int, c_out: int, k: int, stride: int, gain: float = 1.0):
    # Each output sample sums c_in * k / stride products.
    std = gain / math.sqrt(c_in * k / stride)
    return [(f"{key}.weight", (c_in, c_out, k), ("normal", std)), (f"{key}.bias", (c_out,), BIAS)]


def layer_norm(key: str, dim: int):
    """A LayerNorm with bias (an RMSNorm is the single spec `(f"{key}.weight", (dim,), NORM)`)."""
    return [(f"{key}.weight", (dim,), NORM), (f"{key}.bias", (dim,), BIAS)]


def snake(key: str, channels: int):
    """The alpha and beta of a SnakeBeta activation."""
    return [(f"{key}.alpha", (channels,), SNAKE), (f"{key}.beta", (channels,), SNAKE)]


def attention_projections(prefix: str, cfg: dict, hidden: int):
    """q/k/v/o projections (no bias) of an attention block with the head counts of `cfg`."""
    heads, kv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    return (
        linear(f"{prefix}.q_proj", heads * hd, hidden)
        + linear(f"{prefix}.k_proj", kv * hd, hidden)
        + linear(f"{prefix}.v_proj", kv * hd, hidden)
        + linear(f"{prefix}.o_proj", hidden, heads * hd)
    )


def gated_mlp(prefix: str, hidden: int, inter: int):
    """gate/up/down projections (no bias) of a SwiGLU MLP."""
    return (
        linear(f"{prefix}.gate_proj", inter, hidden)
        + linear(f"{prefix}.up_proj", inter, hidden)
        + linear(f"{prefix}.down_proj", hidden, inter)
    )


def layer_scales(prefix: str, hidden: int):
    """The per-channel scales on the attention and MLP branches of a codec transformer layer."""
    return [
        (f"{prefix}.self_attn_layer_scale.scale", (hidden,), LAYER_SCALE),
        (f"{prefix}.mlp_layer_scale.scale", (hidden,), LAYER_SCALE),
    ]
