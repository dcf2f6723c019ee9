"""CPU linear kernels (`make bench-linears`): the bfloat16 kernel of models/csrc/bf16_matvec.cpp
against oneDNN's packed weights, on the 0.6B model's weight shapes, at 1 to 512 rows.

Each measurement cycles through 12 distinct weights (more than the last-level cache holds), so
every product reads its weight from memory, as in a decode step. Prints microseconds per product
and the weight bytes read per second, with a plain read (a float32 sum of 256 MB) as the machine's
ceiling, and writes docs/benchmarks.md. Never used by tests.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from bench.report import machine, write_section
from models.cpu_kernels import PackedLinear, bf16_kernel_built

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    if not bf16_kernel_built():
        raise SystemExit("the bfloat16 kernel is not built here: it needs AVX512-BF16 without AMX, and g++")
    torch.manual_seed(0)
    ceiling = plain_read_gb_per_s()
    print(f"plain read: {ceiling:.1f} GB/s")
    lines = [
        "## CPU linear kernels (bfloat16, 0.6B shapes)",
        "",
        f"Machine: {machine('cpu')}. Command: `make bench-linears` (`python -m bench.bench_linears`).",
        f"Each product reads its weight from memory (the call cycles through {WEIGHTS} weights). A plain read",
        f"(float32 sum of 256 MB) runs at {ceiling:.1f} GB/s here. Microseconds per product, and weight",
        "GB/s in brackets; oneDNN is what bfloat16 ran on before the kernel (and still runs on",
        "where the kernel cannot be built). Both give the same bits.",
        "",
        "| out x in | rows | oneDNN packed us | kernel us | kernel speed-up |",
        "|---|---|---|---|---|",
    ]
    with torch.inference_mode():
        for out_features, in_features in SHAPES:
            linears = [torch.nn.Linear(in_features, out_features, bias=False).bfloat16() for _ in range(WEIGHTS)]
            kernels = [PackedLinear(linear) for linear in linears]
            onednn = [PackedLinear(linear, bf16_kernel=False) for linear in linears]
            gigabytes = out_features * in_features * 2 / 1e9
            for rows in ROWS:
                x = torch.randn(rows, in_features).bfloat16()
                calls = max(1, 48 // max(1, rows // 16))
                timed = {}
                for name, layers in (("oneDNN", onednn), ("kernel", kernels)):
                    timed[name] = seconds_per_call(functools.partial(apply_all, layers, x), calls) / WEIGHTS
                row = (
                    f"| {out_features} x {in_features} | {rows} "
                    f"| {timed['oneDNN'] * 1e6:.0f} ({gigabytes / timed['oneDNN']:.1f}) "
                    f"| {timed['kernel'] * 1e6:.0f} ({gigabytes / timed['kernel']:.1f}) "
                    f"| {timed['oneDNN'] / timed['kernel']:.2f}x |"
                )
                print(row, flush=True)
                lines.append(row)
    write_section("bench-linears-cpu", "\n".join(lines))


if __name__ == "__main__":
    main()
