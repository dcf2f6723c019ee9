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
    PREBUILT_KERNEL_VARIABLE,
    PackedLinear,
    bf16_kernel_built,
    bf16_kernel_cpu,
    bf16_kernel_isa,
    native_bf16,
    pack_linears,
    packing_supported,
    put_ninja_on_path,
)

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")
SHAPES = [(1, 1), (3, 1), (1, 7), (16,), (19,)]  # leading dimensions of the input
FEATURES = [(96, 80), (1100, 100)]  # (in, out): one span of the bf16 kernel's sums and several; padded outputs
KERNEL_FEATURES = [*FEATURES, (2100, 64)]  # and one past 1024 inputs (longer spans from two rows up)
NATIVE_BF16 = pytest.mark.skipif(not native_bf16(CPU), reason="oneDNN computes no bfloat16 here")
KERNEL = pytest.mark.skipif(
    not bf16_kernel_built(),
    reason="the bfloat16 kernel is not built here (see test_bf16_kernel_builds_where_the_cpu_suits_it)",
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
        "from models.cpu_kernels import bf16_kernel_built, bf16_kernel_isa\n"
        "from tests.models.test_cpu_kernels import assert_kernel_sums_in_its_order\n"
        "assert bf16_kernel_built()\n"
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
    """What the CPU image does: the library built beforehand, named by QWENTTS_BF16_KERNEL, loaded
    where nothing can be compiled."""
    build = [sys.executable, "-m", "models.cpu_kernels", str(tmp_path / "kernels")]
    library = subprocess.run(build, check=True, capture_output=True, text=True, cwd=ROOT, timeout=300).stdout.strip()
    check = (
        "from tests.models.test_cpu_kernels import assert_kernel_sums_in_its_order\nassert_kernel_sums_in_its_order()\n"
    )
    extensions = tmp_path / "extensions"
    env = {**os.environ, PREBUILT_KERNEL_VARIABLE: library, "PATH": "", "TORCH_EXTENSIONS_DIR": str(extensions)}
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


@pytest.mark.skipif(not bf16_kernel_cpu(), reason="this CPU does not suit the bfloat16 kernel")
def test_bf16_kernel_builds_where_the_cpu_suits_it():
    assert bf16_kernel_built(), "see the warning logged by models.cpu_kernels"


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
