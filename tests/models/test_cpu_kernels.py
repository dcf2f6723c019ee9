"""Packed linears and the bfloat16 kernel: the kernel sums in its stated order on AVX2, AVX-512 and
AVX512-BF16 (the same bits), which on the last is torch's and oneDNN's; oneDNN's bfloat16 bit-identical
to torch's; float32 within rounding of torch's; from two rows up, a row's result independent of
the other rows."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch
from torch import nn

from models.cpu_kernels import (
    MAX_ISA_VARIABLE,
    PREBUILT_KERNELS_VARIABLE,
    PackedLinear,
    bf16_kernel_built,
    bf16_kernel_isa,
    kernels_built,
    native_bf16,
    pack_linears,
    packing_supported,
    put_ninja_on_path,
    use_fused_ops,
)
from models.layers import RMSNorm, apply_rotary, rms_norm

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
SHAPES = [(1, 1), (3, 1), (1, 7), (16,), (19,)]  # leading dimensions of the input
FEATURES = [(96, 80), (1100, 100)]  # (in, out): one span of the bf16 kernel's sums and several; padded outputs
KERNEL_FEATURES = [*FEATURES, (2100, 64)]  # and one past 1024 inputs (longer spans from two rows up)
NATIVE_BF16 = pytest.mark.skipif(not native_bf16(CPU), reason="oneDNN computes no bfloat16 here")
KERNEL = pytest.mark.skipif(
    not bf16_kernel_built(),
    reason="the bfloat16 kernel is not built here (see test_kernels_build_where_the_cpu_suits_them)",
)


def linear_and_input(dtype, features, bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(*features, bias=bias).to(dtype)
    return linear, torch.randn(*shape, features[0], dtype=dtype)


@pytest.mark.skipif(not packing_supported(torch.float32, CPU), reason="no oneDNN here")
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("features", FEATURES)
@pytest.mark.parametrize("shape", SHAPES)
def test_packed_float32_within_rounding_of_torch(bias, features, shape):
    linear, x = linear_and_input(torch.float32, features, bias, shape)
    with torch.inference_mode():  # outputs near 1; sums of up to 1100 products in another order than MKL's
        torch.testing.assert_close(PackedLinear(linear)(x), linear(x), atol=1e-5, rtol=1e-6)


def in_kernel_order(x, weight, bias):
    """The kernel's arithmetic written out: per output, the input pairs in order, the odd input's
    product added before the even one's (products of bfloat16 values are exact in float32, each
    sum rounded to float32), within spans of 512 inputs (1024 past 1024 inputs from two rows up);
    the spans' sums added in order, then the bias; one rounding to bfloat16."""
    x, weight = x.float(), weight.float()
    inputs = x.shape[1]
    span = 512 if x.shape[0] == 1 or inputs <= 1024 else 1024
    total = torch.zeros(x.shape[0], weight.shape[0])
    for start in range(0, inputs, span):
        partial = torch.zeros_like(total)
        for i in range(start, min(inputs, start + span), 2):
            partial = partial + x[:, i + 1 : i + 2] * weight[:, i + 1]
            partial = partial + x[:, i : i + 1] * weight[:, i]
        total = total + partial
    return (total if bias is None else total + bias.float()).bfloat16()


def cancelling_input(rows, features):
    """Rows and a weight on which the order of a sum shows in bfloat16: each pair of odd inputs'
    products cancels exactly, and the even inputs' products are 2**-16 as large, so each of them is
    rounded at the large products' scale or not depending on when it is added (random rows and
    weights sum exactly in float32 nearly always: products of bfloat16 values have few bits)."""
    torch.manual_seed(0)
    x = torch.randn(rows, features[0]) * 2.0**-16
    x[:, 1::2] = torch.randn(rows, features[0] // 4).repeat_interleave(2, dim=1)
    weight = torch.randn(features[1], features[0])
    weight[:, 3::4] = -weight[:, 1::4]
    return x.bfloat16(), weight.bfloat16()


def swap_pairs(t):
    return t.view(*t.shape[:-1], -1, 2).flip(-1).reshape(t.shape)


def assert_kernel_sums_in_its_order():
    for features in KERNEL_FEATURES:
        for bias in (False, True):
            for rows in (1, 2, 3, 9, 19):
                linear = nn.Linear(*features, bias=bias).bfloat16()
                x, weight = cancelling_input(rows, features)
                with torch.inference_mode():
                    linear.weight.copy_(weight)
                    if bias:  # at the sums' scale, so that it does not hide them
                        linear.bias.mul_(2.0**-16)
                    packed = PackedLinear(linear)
                    assert packed.uses_kernel
                    expected = in_kernel_order(x, weight, linear.bias)
                    case = f"{features} bias={bias} rows={rows}"
                    assert torch.equal(packed(x), expected), case
                    # the input tells orders apart: even inputs first gives other bits
                    assert not torch.equal(in_kernel_order(swap_pairs(x), swap_pairs(weight), linear.bias), expected)


@KERNEL
def test_bf16_kernel_sums_in_its_order():
    assert_kernel_sums_in_its_order()


FMA_PATHS = {  # the paths that emulate the dot product, and how one machine chooses each
    "AVX-512": {MAX_ISA_VARIABLE: "avx512"},  # AVX-512 CPUs without BF16 (Skylake-SP to Ice Lake)
    "AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},  # AVX2-only CPUs
}


@KERNEL
@pytest.mark.parametrize("path", FMA_PATHS)
def test_bf16_kernel_fma_paths_give_the_same_bits(path):
    """The paths that other CPUs run, chosen here in a subprocess: the same sums in the same order."""
    if bf16_kernel_isa() == path or (path == "AVX-512" and bf16_kernel_isa() != "AVX512-BF16"):
        pytest.skip(f"this CPU runs the {bf16_kernel_isa()} path itself, or cannot run the {path} one")
    check = (
        "import torch\n"
        "from models.cpu_kernels import kernels_built, bf16_kernel_isa\n"
        "from tests.models.test_cpu_kernels import assert_kernel_sums_in_its_order\n"
        "assert kernels_built()\n"
        f"assert bf16_kernel_isa() == torch.ops.qwentts.bf16_instructions() == {path!r}, bf16_kernel_isa()\n"
        "assert_kernel_sums_in_its_order()\n"
    )
    env = {**os.environ, **FMA_PATHS[path]}
    subprocess.run([sys.executable, "-c", check], check=True, env=env, cwd=ROOT, timeout=300)


def test_pack_linears_leaves_what_nothing_here_computes():
    """As an AVX2 CPU runs: oneDNN computes no bfloat16 and the kernel reads inputs in pairs, so a
    bfloat16 layer of odd width stays on torch's kernels, and PackedLinear refuses it with a reason
    (it asked oneDNN to pack it, which failed deep inside)."""
    check = (
        "import pytest, torch\n"
        "from torch import nn\n"
        "from models.cpu_kernels import PackedLinear, native_bf16, pack_linears\n"
        "assert not native_bf16(torch.device('cpu'))\n"
        "model = nn.Sequential(nn.Linear(7, 5)).bfloat16()\n"
        "assert pack_linears(model) == 0 and type(model[0]) is nn.Linear\n"
        "with pytest.raises(ValueError, match='inputs in pairs'):\n"
        "    PackedLinear(model[0])\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    subprocess.run([sys.executable, "-c", check], check=True, env=env, cwd=ROOT, timeout=300)


def test_bf16_kernel_path_cap_is_checked(monkeypatch):
    monkeypatch.setenv(MAX_ISA_VARIABLE, "avx512_bf16")
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):  # elsewhere the variable is moot
        with pytest.raises(ValueError, match="avx512 or avx2"):
            bf16_kernel_isa()
    monkeypatch.setenv(MAX_ISA_VARIABLE, "AVX2")
    assert bf16_kernel_isa() in ("AVX2", None)


@pytest.mark.skipif(
    not Path(sysconfig.get_path("scripts"), "ninja").exists(), reason="ninja is not installed beside the interpreter"
)
def test_ninja_beside_the_interpreter_goes_on_path(monkeypatch, tmp_path):
    """The image's builder stage runs /opt/venv/bin/python with the environment not activated:
    torch looks for ninja on PATH, where it is not."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert shutil.which("ninja") is None
    put_ninja_on_path()
    assert Path(shutil.which("ninja")).parent == Path(sysconfig.get_path("scripts"))


@KERNEL
def test_bf16_kernel_runs_prebuilt_where_no_compiler_is(tmp_path):
    """What the CPU image does: the library (products, norms, RoPE) built beforehand, named by
    QWENTTS_CPU_KERNELS, loaded where nothing can be compiled."""
    build = [sys.executable, "-m", "models.cpu_kernels", str(tmp_path / "kernels")]
    library = subprocess.run(build, check=True, capture_output=True, text=True, cwd=ROOT, timeout=300).stdout.strip()
    check = (
        "from tests.models.test_cpu_kernels import assert_fused_ops_match_torch, assert_kernel_sums_in_its_order\n"
        "assert_kernel_sums_in_its_order()\n"
        "assert_fused_ops_match_torch()\n"
    )
    extensions = tmp_path / "extensions"
    env = {**os.environ, PREBUILT_KERNELS_VARIABLE: library, "PATH": "", "TORCH_EXTENSIONS_DIR": str(extensions)}
    subprocess.run([sys.executable, "-c", check], check=True, env=env, cwd=ROOT, timeout=300)
    assert not extensions.exists(), "compiled it again"


@pytest.mark.skipif(bf16_kernel_isa() != "AVX512-BF16", reason="the kernel matches oneDNN's order on AVX512-BF16")
@KERNEL
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("features", KERNEL_FEATURES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_kernel_matches_torch(bias, features, shape):
    """Bit-identical to torch's product of the same rows (so greedy codes are unchanged), on
    random rows and on rows where the order of the sums shows."""
    linear, x = linear_and_input(torch.bfloat16, features, bias, shape)
    cancelling, weight = cancelling_input(x[..., 0].numel(), features)
    with torch.inference_mode():
        packed = PackedLinear(linear)
        assert packed.uses_kernel
        assert torch.equal(packed(x), linear(x))
        linear.weight.copy_(weight)
        packed = PackedLinear(linear)
        assert torch.equal(packed(cancelling), linear(cancelling))


@KERNEL
def test_bf16_kernel_traces_in_one_graph():
    """An operator with a shape function: torch.compile(fullgraph=True) takes it without a break."""
    linear, x = linear_and_input(torch.bfloat16, FEATURES[1], True, (5,))
    with torch.inference_mode():
        packed = PackedLinear(linear)
        compiled = torch.compile(packed, fullgraph=True, backend="aot_eager")
        assert torch.equal(compiled(x), packed(x))


@NATIVE_BF16
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_onednn_packing_matches_torch(bias, shape):
    """Where the kernel is not built (or not wanted), oneDNN's packed weights."""
    linear, x = linear_and_input(torch.bfloat16, FEATURES[0], bias, shape)
    with torch.inference_mode():
        packed = PackedLinear(linear, bf16_kernel=False)
        assert not packed.uses_kernel
        assert torch.equal(packed(x), linear(x))


@pytest.mark.skipif(bf16_kernel_isa() is None, reason="torch runs no AVX2 or AVX-512 kernels here")
def test_kernels_build_where_the_cpu_suits_them():
    assert kernels_built(), "see the warning logged by models.cpu_kernels"


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(
            torch.bfloat16,
            marks=pytest.mark.skipif(not packing_supported(torch.bfloat16, CPU), reason="no packed bfloat16 here"),
        ),
        pytest.param(
            torch.float32, marks=pytest.mark.skipif(not packing_supported(torch.float32, CPU), reason="no oneDNN")
        ),
    ],
)
def test_packed_rows_do_not_depend_on_the_batch(dtype):
    """From two rows up, a row's result is the same whatever the other rows (one row alone may
    sum in another order: oneDNN's one-row kernel)."""
    torch.manual_seed(0)
    packed = PackedLinear(nn.Linear(2048, 512, bias=False).to(dtype))
    x = torch.randn(300, 2048, dtype=dtype)
    with torch.inference_mode():
        pair = packed(x[:2])
        for rows in (3, 8, 9, 16, 17, 300):
            assert torch.equal(packed(x[:rows])[:2], pair), f"{rows} rows"


def test_pack_linears_replaces_nested_layers():
    model = nn.Sequential(nn.Linear(8, 8), nn.ModuleList([nn.Linear(8, 4), nn.ReLU()]))
    assert pack_linears(model) == 2
    assert isinstance(model[0], PackedLinear) and isinstance(model[1][0], PackedLinear)


FUSED = pytest.mark.skipif(
    not kernels_built(), reason="the CPU kernels are not built here (see test_kernels_build_where_the_cpu_suits_them)"
)
# (shape of x, shape of the weight): hidden sizes of the models, per-head q/k norm weights, sizes
# that leave elements past the last whole vector and groups of vectors, rows enough for 2 threads.
NORM_CASES = [
    ((1, 1024), (1024,)),
    ((16, 2048), (2048,)),
    ((5, 24, 128), (24, 128)),
    ((80, 1024), (1024,)),
    ((3, 100), (100,)),
    ((2, 3, 12), (12,)),
    ((4, 3072), (3072,)),
]


def assert_fused_ops_match_torch():
    """The fused norm and RoPE against the torch ops they replace, bit for bit, in float32 and
    bfloat16, on inputs whose magnitudes span many binades (so that another order of the sum of
    squares shows), with one and two threads."""
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    try:
        for dtype in (torch.float32, torch.bfloat16):
            for shape, weight_shape in NORM_CASES:
                x = torch.randn(shape, generator=generator) * torch.exp(3 * torch.randn(shape, generator=generator))
                x = x.to(dtype)
                weight = (1 + torch.randn(weight_shape, generator=generator) / 10).to(dtype)
                for count in (1, 2):
                    torch.set_num_threads(count)
                    expected = rms_norm(x, weight, 1e-6)
                    assert torch.equal(rms_norm(x, weight, 1e-6, fused_cpu=True), expected), (dtype, shape, count)
            for tokens, heads, size in ((1, 24, 128), (16, 24, 128), (3, 5, 64)):
                x = torch.randn(tokens, heads, size, generator=generator).to(dtype)
                angles = torch.rand(tokens, size, generator=generator) * 4000
                cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
                assert torch.equal(apply_rotary(x, cos, sin, fused_cpu=True), apply_rotary(x, cos, sin)), (dtype, heads)
    finally:
        torch.set_num_threads(threads)


@FUSED
def test_fused_norm_and_rotary_match_torch():
    assert_fused_ops_match_torch()


@FUSED
def test_fused_ops_match_torch_as_an_avx2_cpu():
    """Under AVX2 torch's own kernels change (8-lane vectors, other conversions): the same bits."""
    check = "from tests.models.test_cpu_kernels import assert_fused_ops_match_torch\nassert_fused_ops_match_torch()\n"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    subprocess.run([sys.executable, "-c", check], check=True, env=env, cwd=ROOT, timeout=300)


@FUSED
def test_fused_ops_refuse_what_they_do_not_compute():
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        rms_norm(x.half(), torch.ones(8).half(), 1e-6, fused_cpu=True)
    with pytest.raises(RuntimeError, match="does not match the last dimensions"):
        rms_norm(x, torch.ones(4), 1e-6, fused_cpu=True)
    with pytest.raises(RuntimeError, match="the input's dtype"):
        rms_norm(x, torch.ones(8).bfloat16(), 1e-6, fused_cpu=True)
    with pytest.raises(RuntimeError, match=r"cos and sin are \(tokens, head size\)"):
        apply_rotary(x.view(2, 1, 8), torch.ones(3, 8), torch.ones(3, 8), fused_cpu=True)


@FUSED
def test_use_fused_ops_switches_float32_and_bfloat16_layers():
    norms = nn.Sequential(RMSNorm(8, 1e-6), nn.ModuleList([RMSNorm(8, 1e-6)]))
    assert use_fused_ops(norms) == 2 and all(norm.fused_cpu for norm in (norms[0], norms[1][0]))
    half = nn.Sequential(RMSNorm(8, 1e-6)).half()
    assert use_fused_ops(half) == 0 and not half[0].fused_cpu


@FUSED
def test_fused_ops_trace_in_one_graph():
    def norm_and_rotate(x, weight, cos, sin):
        return apply_rotary(rms_norm(x, weight, 1e-6, fused_cpu=True), cos, sin, fused_cpu=True)

    explained = torch._dynamo.explain(norm_and_rotate)(
        torch.randn(2, 3, 8), torch.ones(3, 8), torch.ones(2, 8), torch.zeros(2, 8)
    )
    assert explained.graph_count == 1 and explained.graph_break_count == 0
