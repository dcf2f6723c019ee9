"""Faster linear layers for inference on CPU.

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

BF16_MATVEC_SOURCE = Path(__file__).parent / "csrc" / "bf16_matvec.cpp"  # includes csrc/*.inc
BF16_KERNEL_NAME = "qwentts_bf16_matvec"
PREBUILT_KERNEL_VARIABLE = "QWENTTS_BF16_KERNEL"  # path of the kernel's library, built beforehand
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
def bf16_kernel_built() -> bool:
    """Whether `torch.ops.qwentts.bf16_product` (`csrc/bf16_matvec.cpp`) is here: False where
    the CPU does not suit it or it cannot be built (no C++ compiler or ninja), and bfloat16 then
    runs on oneDNN's packed weights where the CPU has them, else on torch's kernels. The first
    call in a fresh environment compiles it (~30 s), unless $QWENTTS_BF16_KERNEL names a library
    built beforehand (`python -m models.cpu_kernels DIR`; the generator-cpu image carries one)."""
    if not bf16_kernel_cpu():
        return False
    prebuilt = os.environ.get(PREBUILT_KERNEL_VARIABLE)
    try:
        if prebuilt:
            torch.ops.load_library(prebuilt)
        else:
            build_bf16_kernel()
    except Exception as error:  # any failure leaves oneDNN's or torch's products, which are correct
        logger.warning("bfloat16 matvec kernel not loaded (%s); using oneDNN's or torch's products", error)
        return False
    # What torch.compile traces instead of running it: the output's shape.
    torch.library.register_fake("qwentts::bf16_product")(
        lambda x, packed, bias, out_features: x.new_empty((x.shape[0], out_features))
    )
    return True


def build_bf16_kernel() -> Path:
    """Compile the kernel (or find it up to date in torch's extension cache) and load it; returns
    the library's path. It runs on any x86-64 CPU with AVX2: it picks its instructions at run time."""
    from torch.utils.cpp_extension import _get_build_directory, load

    put_ninja_on_path()
    load(
        BF16_KERNEL_NAME,
        [str(BF16_MATVEC_SOURCE)],
        extra_cflags=["-O3", "-fopenmp"],  # at::parallel_for runs in parallel only under OpenMP
        extra_ldflags=["-fopenmp"],
        is_python_module=False,  # it registers operators in the torch.ops.qwentts namespace
    )
    return Path(_get_build_directory(BF16_KERNEL_NAME, verbose=False)) / f"{BF16_KERNEL_NAME}.so"


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
    # The image builder's step: compile the kernel where a compiler is, for images without one.
    parser = argparse.ArgumentParser(description="Build the bfloat16 kernel into DIR (prints its path).")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    print(shutil.copy(build_bf16_kernel(), args.directory))
