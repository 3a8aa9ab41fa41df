"""The interpreter shims of triton_kernels/_compat.py that change numbers: bfloat16.

The bfloat16 Triton kernels are tested on the CPU through the interpreter, so the interpreter
must compute what the GPU does: a bfloat16 ``tl.dot`` gives exact products summed in float32, and
a cast to bfloat16 rounds to nearest even (the stock interpreter multiplied the bit patterns as
integers and truncated the casts).  CPU tensors under TRITON_INTERPRET=1 only.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or os.environ.get("TRITON_INTERPRET") != "1",
    reason="needs triton's interpreter (TRITON_INTERPRET=1)")


@pytest.fixture(scope="module")
def kernels():
    import triton
    import triton.language as tl

    from kexue.triton_kernels import linear_attention  # noqa: F401  (applies the shims)

    @triton.jit
    def dot16(a_ptr, b_ptr, c_ptr, M: tl.constexpr):
        r = tl.arange(0, M)
        a = tl.load(a_ptr + r[:, None] * M + r[None, :])
        b = tl.load(b_ptr + r[:, None] * M + r[None, :])
        tl.store(c_ptr + r[:, None] * M + r[None, :], tl.dot(a, b))

    @triton.jit
    def casts(x_ptr, bf_ptr, back_ptr, n, BLOCK: tl.constexpr):
        r = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + r, mask=r < n)
        y = x.to(tl.bfloat16)
        tl.store(bf_ptr + r, y, mask=r < n)
        tl.store(back_ptr + r, y.to(tl.float32), mask=r < n)

    return dot16, casts


def test_bf16_dot_is_exact_products_summed_in_float32(kernels):
    dot16, _ = kernels
    a, b = (torch.randn(16, 16).bfloat16() for _ in range(2))
    c = torch.full((16, 16), float("nan"))
    dot16[(1,)](a, b, c, M=16)
    ref = a.double() @ b.double()
    # float32 sums of 16 exact products: a few float32 ulps of the largest partial sum
    assert (c.double() - ref).abs().max() <= 16 * 2.0**-24 * (a.double().abs() @ b.double().abs()).max()


def test_casts_to_bf16_round_to_nearest_even(kernels):
    _, casts = kernels
    # ties (1 + 2^-8 -> 1, 1 + 3·2^-8 -> 1 + 2^-6: to even), just below one (the case the
    # truncating cast got wrong), a carry into the exponent, overflow, infinities, NaN, subnormals
    x = torch.tensor([1 + 2.0**-8, 1 + 3 * 2.0**-8, -0.99999994, 0.99999994, 1.9999999, 3.4e38,
                      float("inf"), -float("inf"), float("nan"), 1e-40, -3e-39, 0.0, -0.0, 123.456])
    x = torch.cat([x, torch.randn(1000) * 10.0 ** torch.randint(-30, 30, (1000,))])
    bf = torch.empty(x.shape, dtype=torch.bfloat16)
    back = torch.full(x.shape, 7.0)
    casts[(1,)](x, bf, back, x.numel(), BLOCK=1024 * 2)
    want = x.bfloat16()
    assert torch.equal(bf.view(torch.int16), want.view(torch.int16))
    assert torch.equal(back.view(torch.int32), want.float().view(torch.int32))
