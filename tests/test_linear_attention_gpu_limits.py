"""backend="auto" of kexue.linear_attention on GPUs whose shared memory per block cannot hold the
CUDA kernels' widest tiles (the GPU-path audit).

The chunked CUDA kernels need 113 KiB of shared memory per block for feature widths above 132
(F, or Dv + 1 in the backward): sm_80 and sm_90 allow it, sm_86 / sm_89 (RTX 30xx / 40xx, A10,
L4, L40: 99 KiB) do not, and the CUDA op refuses such calls there.  "auto" must then pick the
Triton kernels instead of failing.  Pure dispatch logic: the device limit is stubbed, no GPU.
"""

from __future__ import annotations

import pytest
import torch

from kexue.linear_attention import api

A100, H100, L4 = 166912, 232448, 101376  # cudaDevAttrMaxSharedMemoryPerBlockOptin, bytes


@pytest.fixture
def gpu(monkeypatch):
    def use(optin: int) -> torch.device:
        monkeypatch.setattr(api, "_smem_per_block_optin", lambda index: optin)
        return torch.device("cuda", 0)
    return use


@pytest.mark.parametrize("width", [257, 200, 133])
def test_auto_takes_triton_where_the_cuda_tiles_do_not_fit(gpu, width):
    order, why = api._auto_order(gpu(L4), {"tokens": 5, "dtype": torch.bfloat16, "width": width})
    assert order == ["triton", "torch"] and "shared memory" in why


@pytest.mark.parametrize(("optin", "width"), [(L4, 132), (L4, 129), (L4, 65), (A100, 257), (H100, 257), (0, 257)])
def test_auto_keeps_the_cuda_kernels_where_they_fit(gpu, optin, width):
    order, _ = api._auto_order(gpu(optin), {"tokens": 5, "dtype": torch.float16, "width": width})
    assert order[0] == "cuda"


def test_shape_info_width_is_the_widest_pass():
    q, v = torch.empty(1, 2, 3, 128), torch.empty(1, 2, 3, 131)
    assert api._shape_info(q, v, 129)["width"] == 132  # Dv + 1 (the backward's dq / dk passes)
    assert api._shape_info(q, v[..., :64], 129)["width"] == 129  # F (taylor: Dk + 1)
    assert api._shape_info(q)["width"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_device_limit_is_read_on_a_gpu():
    # torch's attribute name and unit: more than the 48 KiB every GPU gives without opting in
    assert api._smem_per_block_optin(torch.cuda.current_device()) > 48 * 1024
