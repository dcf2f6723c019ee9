"""CPU linear kernels (`make bench-linears`): the bfloat16 kernel of models/csrc/bf16_matvec.cpp
against what bfloat16 runs on without it (oneDNN's packed weights where oneDNN computes bfloat16,
else torch's own product) and against float32 on oneDNN's packed weights (the other dtype), on the
0.6B model's weight shapes, at 1 to 512 rows. With ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 it measures the kernel's AVX2 path and an AVX2-only CPU's alternatives;
with QWENTTS_BF16_KERNEL_MAX_ISA=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE, the kernel's AVX-512 path and
those of an AVX-512 CPU without BF16 (Skylake-SP to Ice Lake), where oneDNN emulates bfloat16
(`make bench-linears` runs all three).

Each measurement cycles through 12 distinct weights (more than the last-level cache holds), so
every product reads its weight from memory, as in a decode step. Prints microseconds per product,
the weight bytes read per second, with a plain read (a float32 sum of 256 MB) as the machine's
ceiling for few rows, and the kernel's arithmetic rate, with a large matrix product in the
arithmetic the kernel does (bfloat16 where the CPU has a bfloat16 dot product, else float32 FMAs)
as the ceiling for many rows; writes docs/benchmarks.md. Never used by tests.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from bench.report import emulation, machine, write_section
from models.cpu_kernels import PackedLinear, bf16_kernel_built, bf16_kernel_isa, native_bf16

# (out, in) of the 0.6B talker's and predictor's products: q/k/v merged, o, gate/up merged, down.
SHAPES = [(4096, 1024), (1024, 2048), (6144, 1024), (1024, 3072)]
ROWS = (1, 2, 4, 8, 16, 64, 512)
WEIGHTS = 12


def apply_all(layers, x) -> None:
    for layer in layers:
        layer(x)


def seconds_per_call(fn, calls: int, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def plain_read_gb_per_s() -> float:
    """A float32 sum over 256 MB: what one pass over memory costs on this machine."""
    data = torch.ones(64 * 1024 * 1024)
    return data.numel() * 4 / seconds_per_call(lambda: data.sum(), 3) / 1e9


def arithmetic_gflop_per_s(dtype: torch.dtype) -> float:
    """One thread's rate on a 2048 x 2048 x 2048 product (oneDNN or MKL): what many rows can reach."""
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    return 2 * 2048**3 / seconds_per_call(lambda: torch.mm(a, b), 1) / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    if not bf16_kernel_built():
        raise SystemExit("the bfloat16 kernel is not built here: it needs AVX2 (and no AMX), g++ and ninja")
    torch.manual_seed(0)
    ceiling = plain_read_gb_per_s()
    isa = bf16_kernel_isa()
    onednn_bf16 = native_bf16(torch.device("cpu"))
    without = "oneDNN packed" if onednn_bf16 else "torch's"
    dot = isa == "AVX512-BF16"  # else the kernel does float32 FMAs
    arithmetic = "bfloat16 dot products" if dot else "float32 FMAs"
    peak = arithmetic_gflop_per_s(torch.bfloat16 if dot else torch.float32)
    print(f"kernel on {isa}; plain read: {ceiling:.1f} GB/s; a product in {arithmetic}: {peak:.0f} GFLOP/s")
    suffix, emulated = emulation()
    lines = [
        f"## CPU linear kernels (bfloat16, 0.6B shapes): the kernel on {isa}",
        "",
        f"Machine: {machine('cpu')}. Command: `make bench-linears` (`python -m bench.bench_linears`"
        + (f", under {emulated})." if emulated else ")."),
        f"Each product reads its weight from memory (the call cycles through {WEIGHTS} weights). A plain read",
        f"(float32 sum of 256 MB) runs at {ceiling:.1f} GB/s here. Microseconds per product, and weight",
        f"GB/s in brackets. Without the kernel bfloat16 runs on {without} products here; float32 on",
        "oneDNN's packed weights (reading twice the bytes) is the other dtype. The kernel's GFLOP/s",
        f"against a 2048 x 2048 x 2048 product's {peak:.0f} in the kernel's arithmetic here, {arithmetic}",
        "(many rows are bound by it).",
        "",
        f"| out x in | rows | bfloat16, {without} us | float32 packed us | kernel us "
        f"| kernel GFLOP/s | kernel vs {without} | vs float32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    with torch.inference_mode():
        for out_features, in_features in SHAPES:
            linears = [torch.nn.Linear(in_features, out_features, bias=False) for _ in range(WEIGHTS)]
            float32 = [PackedLinear(linear) for linear in linears]
            linears = [linear.bfloat16() for linear in linears]
            kernels = [PackedLinear(linear) for linear in linears]
            others = [PackedLinear(linear, bf16_kernel=False) for linear in linears] if onednn_bf16 else linears
            gigabytes = out_features * in_features * 2 / 1e9
            for rows in ROWS:
                x = torch.randn(rows, in_features).bfloat16()
                calls = max(1, 48 // max(1, rows // 16))
                timed = {}
                for name, layers, rows_in in (
                    ("other", others, x),
                    ("float32", float32, x.float()),
                    ("kernel", kernels, x),
                ):
                    timed[name] = seconds_per_call(functools.partial(apply_all, layers, rows_in), calls) / WEIGHTS
                row = (
                    f"| {out_features} x {in_features} | {rows} "
                    f"| {timed['other'] * 1e6:.0f} ({gigabytes / timed['other']:.1f}) "
                    f"| {timed['float32'] * 1e6:.0f} ({2 * gigabytes / timed['float32']:.1f}) "
                    f"| {timed['kernel'] * 1e6:.0f} ({gigabytes / timed['kernel']:.1f}) "
                    f"| {2 * rows * out_features * in_features / timed['kernel'] / 1e9:.0f} "
                    f"| {timed['other'] / timed['kernel']:.2f}x | {timed['float32'] / timed['kernel']:.2f}x |"
                )
                print(row, flush=True)
                lines.append(row)
    write_section(f"bench-linears-cpu{suffix}", "\n".join(lines))


if __name__ == "__main__":
    main()
