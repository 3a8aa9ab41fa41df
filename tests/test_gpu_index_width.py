"""Index arithmetic of the Triton kernels at the widths a GPU uses (the GPU-path audit).

On a GPU ``tl.arange`` and every integer kernel argument below 2^31 are int32, and an int32
product wraps at 2^31; the interpreter keeps those widths (numpy int32), so the offsets a
kernel computes can be checked here without the memory such offsets address.  The tile offsets
of the linear-attention kernels (``_tile_offsets``: every q / k / v / grad_out load, every out /
dq / dk / dv store and the states) must be exact int64 for a last-dim stride s_d with
(D − 1)·s_d >= 2^31 — a permuted input, e.g. a (Dk, B, H, N) buffer seen as (B, H, N, Dk) with
B·H·N = 2^24 — instead of wrapping to a wrong (or negative) address.  Runs compiled on CUDA
tensors when a GPU is present.
"""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and no TRITON_INTERPRET=1", allow_module_level=True)
triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")
tk = pytest.importorskip("kexue.triton_kernels.linear_attention")
_tile_offsets = tk._tile_offsets  # (a global: jit functions call globals, not closure variables)


@triton.jit
def _offsets_kernel(out_ptr, tok0, s_n, s_d, BT: tl.constexpr, BD: tl.constexpr):
    # as the kernels build them: int64 token indices, an int32 column arange, int32 strides
    tok = tok0 + tl.arange(0, BT).to(tl.int64)
    cols = tl.arange(0, BD)
    r = tl.arange(0, BT)
    tl.store(out_ptr + r[:, None] * BD + cols[None, :], _tile_offsets(tok0 * 0, tok, s_n, cols, s_d))


@pytest.mark.parametrize("s_d", [1, 3, 2**24 + 1, 2**28 + 3, 2**31 - 1])
def test_tile_offsets_do_not_wrap(s_d):
    BT, BD, s_n, tok0 = 4, 16, 5, 7
    out = torch.full((BT, BD), -1, dtype=torch.int64, device=DEVICE)
    _offsets_kernel[(1,)](out, tok0, s_n, s_d, BT=BT, BD=BD)
    tok = torch.arange(tok0, tok0 + BT, dtype=torch.int64)
    cols = torch.arange(BD, dtype=torch.int64)
    expect = tok[:, None] * s_n + cols[None, :] * s_d  # exact: < 2^36
    assert torch.equal(out.cpu(), expect), (s_d, out.cpu()[:, -1], expect[:, -1])
