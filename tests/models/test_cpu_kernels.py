"""Packed bfloat16 linears must be a pure speed change: bit-identical outputs."""

import pytest
import torch
from torch import nn

from models.cpu_kernels import PackedLinear, pack_linears, packing_supported

pytestmark = pytest.mark.skipif(
    not packing_supported(torch.bfloat16, torch.device("cpu")), reason="this CPU/torch has no oneDNN bfloat16 support"
)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 96), (3, 1, 96), (1, 7, 96), (16, 96)])
def test_packed_linear_is_bit_identical(bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(96, 80, bias=bias).to(torch.bfloat16)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(PackedLinear(linear)(x), linear(x))


def test_pack_linears_replaces_nested_layers():
    model = nn.Sequential(nn.Linear(8, 8), nn.ModuleList([nn.Linear(8, 4), nn.ReLU()])).to(torch.bfloat16)
    assert pack_linears(model) == 2
    assert isinstance(model[0], PackedLinear) and isinstance(model[1][0], PackedLinear)
