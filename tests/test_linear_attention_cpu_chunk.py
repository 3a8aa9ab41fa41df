"""The CPU linear-attention kernels at any chunk size (KEXUE_LA_CPU_CHUNK, the tuning knob of
bench/la_cpu_roofline.py): outputs, final state and every gradient equal the float64 reference
at chunk sizes that divide N, do not, exceed it, and are 1; with GQA, an initial state, a key
padding mask and each feature map.  A bad value is a clear error.  Also the quick path of
bench/la_cpu_roofline.py and the CPU branch of measure_ceilings."""

from __future__ import annotations

import pytest
import torch

import kexue
from helpers import load_bench_script
from kexue.benchmarking import measure_ceilings
from kexue.linear_attention import feature_dim

TOL = 1e-9  # float64 kernels against the float64 reference: rounding only


def run(backend, q, k, v, S0, z0, mask, causal, fm, normalize):
    out, (S, z) = kexue.linear_attention(q, k, v, causal=causal, feature_map=fm, normalize=normalize,
                                         key_padding_mask=mask, initial_state=(S0, z0), return_state=True,
                                         backend=backend)
    loss = out.square().sum() + S.sin().sum() + z.cos().sum()
    return (out, S, z, *torch.autograd.grad(loss, (q, k, v, S0, z0)))


@pytest.mark.parametrize("chunk", [1, 7, 32, 100, 256])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("fm,normalize", [(None, False), ("elu", True), ("taylor", True)])
def test_any_chunk_size_matches_reference(chunk, causal, fm, normalize, monkeypatch):
    g = torch.Generator().manual_seed(chunk)
    B, H, Hkv, N, Dk, Dv = 2, 4, 2, 83, 11, 13
    F = feature_dim(fm, Dk)
    q = torch.randn(B, H, N, Dk, generator=g, dtype=torch.float64).requires_grad_()
    k = torch.randn(B, Hkv, N, Dk, generator=g, dtype=torch.float64).requires_grad_()
    v = torch.randn(B, Hkv, N, Dv, generator=g, dtype=torch.float64).requires_grad_()
    S0 = (torch.rand(B, H, F, Dv, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    z0 = (torch.rand(B, H, F, generator=g, dtype=torch.float64) + 1).requires_grad_()
    mask = torch.rand(B, N, generator=g) < 0.2
    args = (q, k, v, S0, z0, mask, causal, fm, normalize)
    want = run("torch", *args)
    monkeypatch.setenv("KEXUE_LA_CPU_CHUNK", str(chunk))
    got = run("cpu", *args)
    for name, a, b in zip(("out", "S", "z", "dq", "dk", "dv", "dS0", "dz0"), got, want, strict=True):
        scale = b.abs().max().clamp_min(1.0)
        assert (a - b).abs().max() <= TOL * scale, (name, (a - b).abs().max().item())


@pytest.mark.parametrize("value", ["0", "257", "-3", "many"])
def test_bad_chunk_is_a_clear_error(value, monkeypatch):
    monkeypatch.setenv("KEXUE_LA_CPU_CHUNK", value)
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(RuntimeError, match="KEXUE_LA_CPU_CHUNK"):
        kexue.linear_attention(q, q, q, backend="cpu")


def test_roofline_script_quick():
    mod = load_bench_script("la_cpu_roofline")
    med = mod.main(["--quick", "--chunks", "8,16"])
    assert med["ceiling_GFLOPs"] > 0
    assert {"D16 causal kexue c8", "D16 causal kexue c16", "D16 non-causal kexue c8"} <= set(med)


def test_cpu_gemm_ceiling():
    ceilings = measure_ceilings(torch.device("cpu"), repeats=1)
    assert ceilings["fp32_GFLOPs"] == max(v for k, v in ceilings.items() if k != "fp32_GFLOPs") > 0
