"""Blocks the Qwen3-TTS talker, its code predictor and the 12 Hz codec decoder share.

Written once here. Module and attribute names follow the checkpoint keys (`input_layernorm.weight`,
`mlp.gate_proj.weight`, ...), so weights load by name. `fuse()` on a loaded model merges the
projections that read the same input (q/k/v, gate/up) into one matrix each, so a step runs one
matrix product where it ran three or two: the same dot products, fewer and fatter kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, fused_cpu: bool = False) -> torch.Tensor:
    """Normalise the last dimension in float32, cast back to the input dtype, then multiply by the
    weight (the released models' order, needed for bit-exact results in bfloat16). `weight` matches
    x's trailing dimensions. `fused_cpu`: as one CPU operator (models/csrc/norm_rotary.cpp, the same
    bits), for layers that models.cpu_kernels.use_fused_ops() switched over."""
    if fused_cpu:
        return torch.ops.qwentts.rms_norm(x, weight, eps)
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(dtype)


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps
        self.fused_cpu = False  # set by models.cpu_kernels.use_fused_ops()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, self.fused_cpu)


class SwiGLUMLP(nn.Module):
    """down(silu(gate(x)) * up(x)), without biases."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)
        self.gate_up_proj: nn.Linear | None = None  # set by fuse()

    def fuse(self) -> None:
        self.gate_up_proj = fuse_linears(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is None:
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def fuse_linears(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the outputs of `linears` side by side (same input)."""
    first = linears[0]
    fused = nn.Linear(
        first.in_features,
        sum(lin.out_features for lin in linears),
        bias=first.bias is not None,
        device=first.weight.device,
        dtype=first.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if first.bias is not None:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused.requires_grad_(False)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, fused_cpu: bool = False) -> torch.Tensor:
    """Rotate-half RoPE of x (tokens, heads, head_dim) with each token's cos and sin (tokens,
    head_dim); `fused_cpu` as in rms_norm."""
    if fused_cpu:
        return torch.ops.qwentts.rotary(x, cos, sin)
    return x * cos[:, None] + rotate_half(x) * sin[:, None]


def rope_table(head_dim: int, theta: float, positions: int, dtype: torch.dtype, device=None):
    """cos and sin of shape (positions, head_dim), computed in float32 then cast: a step indexes
    them by position instead of computing them (and never asks the host for the longest one)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    freqs = torch.arange(positions, device=device).float()[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
