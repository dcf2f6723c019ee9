"""Faster linear layers for bfloat16 inference on CPU.

A decode step is memory-bound: it streams every weight once. On CPU, torch's default bfloat16
matrix-vector kernel reads weights at about 16 GB/s and its small-batch matrix-matrix kernel at
about 14 GB/s, while oneDNN with weights pre-packed into its blocked layout reaches about 22 GB/s
for every batch size from 1 to 16 (measured on the build machine, see docs/benchmarks.md) and
gives bit-identical results. So after loading, a bfloat16 model on CPU swaps each `nn.Linear` for
a `PackedLinear` holding the packed weight (same memory; the plain weight is released).

float32 keeps torch's default kernels: oneDNN's packed float32 path changes results in the last
bits (it accumulates in another order), which would break exact parity with the reference.
"""

from __future__ import annotations

import torch
from torch import nn


def preferred_dtype(device: str) -> str:
    """The faster dtype on `device`: bfloat16 on CUDA, and on a CPU that computes bfloat16 in
    hardware (AVX512-BF16 or AMX, where oneDNN's packed kernels read half the bytes of float32);
    float32 elsewhere (on an AVX2-only CPU bfloat16 is converted in software and measured slower)."""
    if device == "cuda":
        return "bfloat16"
    return "bfloat16" if native_bf16(torch.device(device)) else "float32"


def native_bf16(device: torch.device) -> bool:
    return (
        device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    return dtype == torch.bfloat16 and native_bf16(device)


class PackedLinear(nn.Module):
    """`nn.Linear` with its weight pre-packed for oneDNN; inference only."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(weight, 1), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x):
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_linears(module: nn.Module) -> int:
    """Replace every `nn.Linear` inside `module` by a `PackedLinear`; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, PackedLinear(child))
            count += 1
        else:
            count += pack_linears(child)
    return count
