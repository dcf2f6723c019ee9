"""Packed linears: bfloat16 bit-identical to torch's; float32 within rounding of torch's, and a
row's result independent of the other rows of the product."""

import pytest
import torch
from torch import nn

from models.cpu_kernels import PackedLinear, pack_linears, packing_supported

CPU = torch.device("cpu")
SHAPES = [(1, 1, 96), (3, 1, 96), (1, 7, 96), (16, 96)]


def linear_and_input(dtype, bias, shape):
    torch.manual_seed(0)
    return nn.Linear(96, 80, bias=bias).to(dtype), torch.randn(*shape, dtype=dtype)


@pytest.mark.skipif(not packing_supported(torch.bfloat16, CPU), reason="this CPU/torch has no oneDNN bfloat16")
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_packed_bfloat16_linear_is_bit_identical(bias, shape):
    linear, x = linear_and_input(torch.bfloat16, bias, shape)
    with torch.inference_mode():
        assert torch.equal(PackedLinear(linear)(x), linear(x))


@pytest.mark.skipif(not packing_supported(torch.float32, CPU), reason="this torch has no oneDNN")
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_packed_float32_linear_matches_within_rounding(bias, shape):
    linear, x = linear_and_input(torch.float32, bias, shape)
    with torch.inference_mode():
        torch.testing.assert_close(PackedLinear(linear)(x), linear(x), atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not packing_supported(torch.float32, CPU), reason="this torch has no oneDNN")
def test_packed_float32_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    packed = PackedLinear(nn.Linear(1024, 512, bias=False))
    x = torch.randn(300, 1024)
    with torch.inference_mode():
        pair = packed(x[:2])
        for rows in (3, 16, 17, 300):
            assert torch.equal(packed(x[:rows])[:2], pair), f"{rows} rows"


def test_pack_linears_replaces_nested_layers():
    model = nn.Sequential(nn.Linear(8, 8), nn.ModuleList([nn.Linear(8, 4), nn.ReLU()]))
    assert pack_linears(model) == 2
    assert isinstance(model[0], PackedLinear) and isinstance(model[1][0], PackedLinear)
