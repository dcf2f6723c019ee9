"""Faster linear layers, norms and RoPE for inference on CPU.

A decode step is memory-bound at one stream and compute-bound at many: it streams every weight
once, for however many rows the step has. oneDNN with weights pre-packed into its blocked layout
serves both ends better than torch's default kernels (measured on the build machine, see
docs/benchmarks.md): for bfloat16 it reads weights faster than torch's matrix-vector kernel and
gives bit-identical results; for float32 it computes 16 rows about 2.5 times faster than torch's
MKL GEMM with AVX-512 (about 1.3 times with AVX2) at the same one-row speed. So after loading, a
model on CPU swaps each `nn.Linear` for a `PackedLinear` holding the packed weight (same memory;
the plain weight is released).

bfloat16 goes one step further where a C++ compiler is at hand: the kernel in
`csrc/bf16_matvec.cpp` (built on first use by torch's extension loader, about 30 s, and cached
under `TORCH_EXTENSIONS_DIR`, by default ~/.cache/torch_extensions) reads each weight as one
contiguous stream and sums in oneDNN's order. On CPUs with AVX512-BF16 (and no AMX) it uses their
bfloat16 dot product, reads weights 1.2-2.3 times faster than oneDNN at 1-8 rows of one core of the
build machine (`make bench-linears`), and its results are bit-identical to torch's, so greedy
codes do not change. On CPUs without AVX512-BF16 it runs the same arithmetic in float32 FMAs with
the same bits, in 512-bit vectors on AVX-512 CPUs (Skylake-SP to Ice Lake) and 256-bit on AVX2
ones, where torch alone would convert bfloat16 in software (and oneDNN, on AVX-512 without BF16,
emulates it 2.3-5.6 times slower); there it makes bfloat16 the faster dtype.
Where it cannot be built or loaded (no compiler and no prebuilt library; generator-cpu carries one)
bfloat16 runs on oneDNN's packed weights where oneDNN computes bfloat16, with a warning.

The same library (`csrc/norm_rotary.cpp`) holds RMSNorm and rotate-half RoPE as one operator each,
bit-identical to the torch ops they replace (float32 and bfloat16): `use_fused_ops` switches a
loaded model's layers to them, which removes about half of a CPU decode step's kernel calls.

The float32 packed kernel accumulates in another order than MKL's, so its results differ from
torch's (and the reference's) in the last bits, at most a few 1e-6 on the model's products; the
parity suite (identical greedy codes, first-step distributions within 1e-5) runs on it. Its rows
do not depend on the other rows of a product of two or more rows.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import shutil
import sysconfig
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

KERNEL_SOURCES = [Path(__file__).parent / "csrc" / name for name in ("bf16_matvec.cpp", "norm_rotary.cpp")]
KERNELS_NAME = "qwentts_cpu_kernels"
PREBUILT_KERNELS_VARIABLE = "QWENTTS_CPU_KERNELS"  # path of the kernels' library, built beforehand
MAX_ISA_VARIABLE = "QWENTTS_BF16_KERNEL_MAX_ISA"  # avx512 or avx2: the widest path the kernel may take

# The batch size oneDNN lays a packed weight out for: the layout it picks for 16 rows serves one
# row as fast as the one-row layout and 16 rows 20-25% faster (0.6B decode step, build machine).
PACKED_FOR_ROWS = 16


def preferred_dtype(device: str) -> str:
    """The faster dtype on `device`: bfloat16 on CUDA, and on a CPU where bfloat16 products read
    half the bytes of float32 ones: where the kernel below is built (AVX2 or AVX-512), or where
    oneDNN computes bfloat16 in hardware (AVX512-BF16 or AMX); float32 elsewhere (torch's own
    bfloat16 products on an AVX2-only CPU convert in software and measured slower)."""
    if device == "cuda":
        return "bfloat16"
    return "bfloat16" if packing_supported(torch.bfloat16, torch.device(device)) else "float32"


def native_bf16(device: torch.device) -> bool:
    """Whether oneDNN computes bfloat16 on this CPU (AVX-512 or AMX)."""
    return (
        device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def packing_supported(dtype: torch.dtype, device: torch.device) -> bool:
    if device.type != "cpu":
        return False
    if dtype == torch.bfloat16:
        return bf16_kernel_built() or native_bf16(device)
    return dtype == torch.float32 and torch.backends.mkldnn.is_available()


def bf16_kernel_cpu() -> bool:
    """Whether this CPU suits the bfloat16 kernel: AVX2 or AVX-512 (AVX512-BF16 computes it in
    hardware), and no AMX (with AMX oneDNN sums in tiles, in another order, and its batched
    products are far faster)."""
    return bf16_kernel_isa() is not None and not torch.cpu._is_amx_tile_supported()


def bf16_kernel_built() -> bool:
    """Whether bfloat16 products run on the kernel here: the CPU suits it and the library is built."""
    return bf16_kernel_cpu() and kernels_built()


def bf16_kernel_isa() -> str | None:
    """Which instructions the kernel runs on here: "AVX512-BF16" (its dot product), "AVX-512" or
    "AVX2" (the same arithmetic in FMAs), or None where neither. It follows torch's CPU capability
    (so ATEN_CPU_CAPABILITY=avx2 picks AVX2 on an AVX-512 machine too), lowered to
    $QWENTTS_BF16_KERNEL_MAX_ISA (avx512 or avx2) where set; every path gives the same bits. The
    kernel decides the same way (`torch.ops.qwentts.bf16_instructions()` says what it runs)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX2":
        return "AVX2"
    if capability != "AVX512":
        return None
    max_isa = os.environ.get(MAX_ISA_VARIABLE, "").lower()
    if max_isa not in ("", "avx512", "avx2"):
        raise ValueError(f"{MAX_ISA_VARIABLE} is avx512 or avx2 (the widest path the kernel may take), not {max_isa!r}")
    if max_isa == "avx2":
        return "AVX2"
    return "AVX512-BF16" if max_isa != "avx512" and torch.cpu._is_avx512_bf16_supported() else "AVX-512"


@functools.cache
def kernels_built() -> bool:
    """Whether the project's CPU operators (`csrc/`: `torch.ops.qwentts.bf16_product`, `rms_norm`,
    `rotary`) are here: False where torch does not run AVX2 or AVX-512 kernels or the library
    cannot be built (no C++ compiler or ninja); products then run on oneDNN's packed weights where
    the CPU has them, else on torch's kernels, and norms and RoPE as torch ops. The first call in a
    fresh environment compiles it (~40 s), unless $QWENTTS_CPU_KERNELS names a library built
    beforehand (`python -m models.cpu_kernels DIR`; the generator-cpu image carries one)."""
    if bf16_kernel_isa() is None:
        return False
    prebuilt = os.environ.get(PREBUILT_KERNELS_VARIABLE)
    try:
        if prebuilt:
            torch.ops.load_library(prebuilt)
        else:
            build_kernels()
    except Exception as error:  # any failure leaves oneDNN's or torch's kernels, which are correct
        logger.warning("CPU kernels not loaded (%s); using oneDNN's or torch's", error)
        return False
    # What torch.compile traces instead of running them: the outputs' shapes.
    torch.library.register_fake("qwentts::bf16_product")(
        lambda x, packed, bias, out_features: x.new_empty((x.shape[0], out_features))
    )
    torch.library.register_fake("qwentts::rms_norm")(lambda x, weight, eps: torch.empty_like(x))
    torch.library.register_fake("qwentts::rotary")(lambda x, cos, sin: torch.empty_like(x))
    return True


def build_kernels() -> Path:
    """Compile the library (or find it up to date in torch's extension cache) and load it; returns
    its path. It runs on any x86-64 CPU with AVX2: it picks its instructions at run time."""
    from torch.utils.cpp_extension import _get_build_directory, load

    put_ninja_on_path()
    load(
        KERNELS_NAME,
        [str(source) for source in KERNEL_SOURCES],
        # OpenMP: at::parallel_for runs in parallel only under it. No contraction of a * b + c into
        # one FMA: norm_rotary.cpp rounds each product as torch does.
        extra_cflags=["-O3", "-fopenmp", "-ffp-contract=off"],
        extra_ldflags=["-fopenmp"],
        is_python_module=False,  # it registers operators in the torch.ops.qwentts namespace
    )
    return Path(_get_build_directory(KERNELS_NAME, verbose=False)) / f"{KERNELS_NAME}.so"


def use_fused_ops(module: nn.Module, on: bool = True) -> int:
    """Let every layer inside `module` that can (`fused_cpu` attribute: the norms, the talker's
    attention) run its norm and RoPE as one CPU operator each (`csrc/norm_rotary.cpp`, the same bits
    as torch's ops), where the library is here and the weights are float32 or bfloat16 (`on=False`:
    back to torch's ops); returns how many layers."""
    if on and (next(module.parameters()).dtype not in (torch.float32, torch.bfloat16) or not kernels_built()):
        return 0
    layers = [m for m in module.modules() if hasattr(m, "fused_cpu")]
    for layer in layers:
        layer.fused_cpu = on
    return len(layers)


def put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the ninja package (a dependency) installs it beside this
    interpreter's scripts, which are not on PATH where the environment is not activated (the
    image's builder stage, `.venv/bin/python ...`)."""
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja") is None and Path(scripts, "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])


def kernel_packs(linear: nn.Linear, bf16_kernel: bool = True) -> bool:
    """Whether the bfloat16 kernel takes this layer: bfloat16, an even number of inputs (it reads
    them in pairs), the kernel built here, and not turned down (`bf16_kernel`)."""
    weight = linear.weight
    return bf16_kernel and weight.dtype == torch.bfloat16 and linear.in_features % 2 == 0 and bf16_kernel_built()


def onednn_packs(linear: nn.Linear) -> bool:
    """Whether oneDNN computes this layer's dtype on this CPU (float32 always; bfloat16 natively)."""
    dtype = linear.weight.dtype
    return torch.backends.mkldnn.is_available() and (
        dtype == torch.float32 or (dtype == torch.bfloat16 and native_bf16(linear.weight.device))
    )


class PackedLinear(nn.Module):
    """`nn.Linear` with its weight pre-packed for the bfloat16 kernel above where it takes the layer
    (`kernel_packs`), else for oneDNN where it computes the layer's dtype; inference only."""

    def __init__(self, linear: nn.Linear, bf16_kernel: bool = True):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.uses_kernel = kernel_packs(linear, bf16_kernel)
        if self.uses_kernel:
            packed = torch.ops.qwentts.bf16_pack(weight)
        elif onednn_packs(linear):
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_FOR_ROWS)
        else:
            raise ValueError(
                f"no packed product for a {weight.dtype} linear of {self.in_features} inputs on this CPU "
                "(the bfloat16 kernel reads inputs in pairs; oneDNN computes bfloat16 only with AVX-512)"
            )
        self.register_buffer("packed_weight", packed, persistent=False)
        bias = None if linear.bias is None else linear.bias.detach()
        if self.uses_kernel and bias is not None:
            # The kernel adds it to the float32 sums, as oneDNN does, over the packed (padded) outputs.
            padded_outputs = packed.shape[0] * packed.shape[2]
            bias = nn.functional.pad(bias.float(), (0, padded_outputs - self.out_features))
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x):
        flat = x.reshape(-1, self.in_features)
        if self.uses_kernel:
            out = torch.ops.qwentts.bf16_product(flat, self.packed_weight, self.bias, self.out_features)
        else:
            out = torch.ops.mkldnn._linear_pointwise(flat, self.packed_weight, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_linears(module: nn.Module) -> int:
    """Replace every `nn.Linear` inside `module` that the kernel or oneDNN can take by a
    `PackedLinear` (any other stays on torch's kernels); returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if kernel_packs(child) or onednn_packs(child):
                setattr(module, name, PackedLinear(child))
                count += 1
        else:
            count += pack_linears(child)
    return count


if __name__ == "__main__":
    # The image builder's step: compile the library where a compiler is, for images without one.
    parser = argparse.ArgumentParser(description="Build the CPU kernels' library into DIR (prints its path).")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    print(shutil.copy(build_kernels(), args.directory))
