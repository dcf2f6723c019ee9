"""Packed linears: bfloat16 bit-identical to torch's; float32 within rounding of torch's, and a
row's result independent of the other rows of the product."""

import pytest
import torch
from torch import nn

from models.cpu_kernels import PackedLinear, pack_linears, packing_supported

CPU = torch.device("cpu")
SHAPES = [(1, 1, 96), (3, 1, 96), (1, 7, 96), (16, 96)]


# bfloat16 must be bit-identical (tolerance 0); float32 sums in another order than MKL.
DTYPES = [
    pytest.param(
        torch.bfloat16,
        0.0,
        marks=pytest.mark.skipif(not packing_supported(torch.bfloat16, CPU), reason="no oneDNN bfloat16 here"),
    ),
    pytest.param(
        torch.float32,
        1e-6,
        marks=pytest.mark.skipif(not packing_supported(torch.float32, CPU), reason="no oneDNN here"),
    ),
]


@pytest.mark.parametrize(("dtype", "tolerance"), DTYPES)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_packed_linear_matches_torch(dtype, tolerance, bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(96, 80, bias=bias).to(dtype)
    x = torch.randn(*shape, dtype=dtype)
    with torch.inference_mode():
        torch.testing.assert_close(PackedLinear(linear)(x), linear(x), atol=tolerance, rtol=tolerance)


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
