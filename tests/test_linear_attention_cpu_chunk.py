"""The CPU linear-attention kernels at any chunk size (KEXUE_LA_CPU_CHUNK, the tuning knob of
bench/la_cpu_roofline.py): outputs, final state and every gradient equal the float64 reference
at chunk sizes that divide N, do not, exceed it, and are 1; with GQA, an initial state, a key
padding mask and each feature map.  The causal backward keeps its chunk products for its second
pass, with the mapped rows φ(q), φ(k) when there is a feature map (up to KEXUE_LA_CPU_KEEP_MB per
task), or recomputes them: both ways equal the reference,
and each other bit for bit.  A bad value of either knob is a clear error.  Also the quick path
of bench/la_cpu_roofline.py and the CPU branch of measure_ceilings."""

from __future__ import annotations

import sys

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


def problem(seed, fm, dtype=torch.float64, N=83, Dk=11, Dv=13):
    g = torch.Generator().manual_seed(seed)
    B, H, Hkv = 2, 4, 2
    F = feature_dim(fm, Dk)
    q = torch.randn(B, H, N, Dk, generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(B, Hkv, N, Dk, generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(B, Hkv, N, Dv, generator=g, dtype=dtype).requires_grad_()
    acc = torch.float64 if dtype == torch.float64 else torch.float32  # the state's dtype
    S0 = (torch.rand(B, H, F, Dv, generator=g, dtype=acc) * 0.1).requires_grad_()
    z0 = (torch.rand(B, H, F, generator=g, dtype=acc) + 1).requires_grad_()
    mask = torch.rand(B, N, generator=g) < 0.2
    return q, k, v, S0, z0, mask


def check_against_reference(chunk, causal, fm, normalize, monkeypatch):
    args = (*problem(chunk, fm), causal, fm, normalize)
    want = run("torch", *args)
    monkeypatch.setenv("KEXUE_LA_CPU_CHUNK", str(chunk))
    got = run("cpu", *args)
    for name, a, b in zip(("out", "S", "z", "dq", "dk", "dv", "dS0", "dz0"), got, want, strict=True):
        scale = b.abs().max().clamp_min(1.0)
        assert (a - b).abs().max() <= TOL * scale, (name, (a - b).abs().max().item())


@pytest.mark.parametrize("chunk", [1, 7, 32, 100, 256])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("fm,normalize", [(None, False), ("elu", True), ("taylor", True)])
def test_any_chunk_size_matches_reference(chunk, causal, fm, normalize, monkeypatch):
    check_against_reference(chunk, causal, fm, normalize, monkeypatch)


@pytest.mark.parametrize("chunk", [7, 32])
@pytest.mark.parametrize("fm,normalize", [(None, False), (None, True), ("elu", True)])
def test_recomputed_chunk_products_match_reference(chunk, fm, normalize, monkeypatch):
    monkeypatch.setenv("KEXUE_LA_CPU_KEEP_MB", "0")  # the second pass recomputes K and M
    check_against_reference(chunk, True, fm, normalize, monkeypatch)


@pytest.mark.parametrize("fm,normalize", [(None, False), ("elu", True), ("softmax", False), ("taylor", True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kept_and_recomputed_chunk_products_agree_bit_for_bit(fm, normalize, dtype, monkeypatch):
    args = (*problem(3, fm, dtype=dtype, N=150, Dk=64, Dv=64), True, fm, normalize)
    kept = run("cpu", *args)
    monkeypatch.setenv("KEXUE_LA_CPU_KEEP_MB", "0")
    recomputed = run("cpu", *args)
    for name, a, b in zip(("out", "S", "z", "dq", "dk", "dv", "dS0", "dz0"), kept, recomputed, strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("var,value", [("KEXUE_LA_CPU_CHUNK", v) for v in ("0", "257", "-3", "many")]
                         + [("KEXUE_LA_CPU_KEEP_MB", v) for v in ("-1", "1048577", "lots", "1.5")])
def test_bad_environment_knob_is_a_clear_error(var, value, monkeypatch):
    monkeypatch.setenv(var, value)
    q = torch.randn(1, 1, 8, 4)
    with pytest.raises(RuntimeError, match=var):
        kexue.linear_attention(q, q, q, backend="cpu")


def test_roofline_script_quick():
    mod = load_bench_script("la_cpu_roofline")
    med = mod.main(["--quick", "--chunks", "8,16"])
    assert med["ceiling_GFLOPs"] > 0
    assert {"D16 causal kexue c8", "D16 causal kexue c16", "D16 non-causal kexue c8"} <= set(med)


def test_cpu_gemm_ceiling():
    ceilings = measure_ceilings(torch.device("cpu"), repeats=1)
    assert ceilings["fp32_GFLOPs"] == max(v for k, v in ceilings.items() if k != "fp32_GFLOPs") > 0


def test_modules_script_quick():
    mod = load_bench_script("la_cpu_modules")
    report = mod.main(["--quick"])
    assert "| 16 | True | kexue (cpu) |" in report and "| 16 | False | kexue (cpu) |" in report


def test_modules_script_stubs_only_unbuilt_extensions(tmp_path, monkeypatch):
    # a package whose import pulls in a compiled extension that is not built, and one that is (a .py here)
    pkg = tmp_path / "fast_transformers"
    (pkg / "hashing").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .hashing import compute_hashes, built\n")
    (pkg / "hashing" / "__init__.py").write_text(
        "from .hashing_cpu import compute_hashes\nfrom .built_cpu import built\n")
    (pkg / "hashing" / "built_cpu.py").write_text("def built():\n    return 42\n")
    mod = load_bench_script("la_cpu_modules")
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = mod._StubUnbuiltExtensions()
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    for name in [m for m in sys.modules if m.startswith("fast_transformers")]:
        monkeypatch.delitem(sys.modules, name)
    import fast_transformers
    assert fast_transformers.built() == 42  # the real module, not a stub
    with pytest.raises(RuntimeError, match="not built"):
        fast_transformers.compute_hashes()
    for name in [m for m in sys.modules if m.startswith("fast_transformers")]:
        monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize("Dk", [5, 37, 64])
def test_softmax_map_takes_the_max_of_every_feature(Dk):
    # φ = softmax over the Dk features, computed as e^(x - max x) with e^x clamped at 88: a max that
    # missed features (a lane of the vector body, a whole vector, the tail) is only seen when two
    # missed features stand more than 88 above the rest.  Row t has 150 and 149 at features t and
    # t + 16 (the same lane of the next vector; t + 1 for Dk <= 16), everything else N(0, 1).
    g = torch.Generator().manual_seed(Dk)
    N = Dk
    q, k = (torch.randn(1, 2, N, Dk, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 2, N, 8, generator=g, dtype=torch.float64)
    t = torch.arange(N)
    for x in (q, k):
        x[:, :, t, t % Dk] = 150.0
        x[:, :, t, (t + (16 if Dk > 16 else 1)) % Dk] = 149.0
    q, k, v = (x.float().requires_grad_() for x in (q, k, v))
    out = kexue.linear_attention(q, k, v, feature_map="softmax", causal=True, backend="cpu")
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    q64, k64, v64 = (x.detach().double().requires_grad_() for x in (q, k, v))
    want = kexue.linear_attention(q64, k64, v64, feature_map="softmax", causal=True, backend="torch")
    want_grads = torch.autograd.grad(want.square().sum(), (q64, k64, v64))
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)
