"""Packed linears and the bfloat16 kernel: bfloat16 bit-identical to torch's; float32 within
rounding of torch's; from two rows up, a row's result independent of the other rows."""

import pytest
import torch
from torch import nn

from models.cpu_kernels import PackedLinear, bf16_kernel_built, bf16_kernel_cpu, pack_linears, packing_supported

CPU = torch.device("cpu")
SHAPES = [(1, 1), (3, 1), (1, 7), (16,), (19,)]  # leading dimensions of the input
FEATURES = [(96, 80), (1100, 100)]  # (in, out): one span of the bf16 kernel's sums and several; padded outputs
NATIVE_BF16 = pytest.mark.skipif(not packing_supported(torch.bfloat16, CPU), reason="no native bfloat16 here")


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


@NATIVE_BF16
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("features", [*FEATURES, (2100, 64)])  # and one past 1024 inputs
@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_kernel_matches_torch(bias, features, shape):
    """Bit-identical to torch's product of the same rows (so greedy codes are unchanged)."""
    if not bf16_kernel_built():
        pytest.skip("the bfloat16 kernel is not built here (test_bf16_kernel_builds_where_the_cpu_suits_it says why)")
    linear, x = linear_and_input(torch.bfloat16, features, bias, shape)
    with torch.inference_mode():
        packed = PackedLinear(linear)
        assert packed.uses_kernel
        assert torch.equal(packed(x), linear(x))


@NATIVE_BF16
def test_bf16_kernel_traces_in_one_graph():
    """An operator with a shape function: torch.compile(fullgraph=True) takes it without a break."""
    if not bf16_kernel_built():
        pytest.skip("the bfloat16 kernel is not built here")
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
@NATIVE_BF16
def test_bf16_kernel_builds_where_the_cpu_suits_it():
    assert bf16_kernel_built(), "see the warning logged by models.cpu_kernels"


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.bfloat16, marks=NATIVE_BF16),
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
