"""Compiles every Triton kernel variant of kexue for a GPU target without a GPU.

Runs each op's real host code (block sizes, splits, segment count, flags) on CPU tensors of
realistic shapes, but instead of launching a kernel it compiles it for ``--arch`` (default sm_90)
with every autotune config (plain @triton.jit kernels: the launch's num_warps/num_stages, triton's
defaults 4/3 when not given) and reports registers and spills from ptxas and the shared memory.
Catches compile errors and register spills on machines without a GPU; it says nothing about speed.
The host code is reached through each kernel module's ``_launch(kernel, grid, *args, **kwargs)``,
replaced here.

    python bench/triton_aot_check.py [--arch 90] [--op la|ce|probe|all] [--quick] [--one-config]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

os.environ.pop("TRITON_INTERPRET", None)

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import kexue.triton_kernels.cross_entropy as tce  # noqa: E402
import kexue.triton_kernels.linear_attention as tk  # noqa: E402
import kexue.triton_kernels.probe as tp  # noqa: E402

TORCH_TO_TRITON = {
    torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
    torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1",
}
RESULTS: dict[tuple, str] = {}
# flags printed per variant (the constexprs that tell the variants of a kernel apart)
SHOWN = ("FMAP", "CAUSAL", "STATS", "BWD", "BT", "BK", "BV", "HAS_BIAS", "HAS_W", "SMOOTH", "BLOCK", "SB",
         "cols_per_split", "BLOCK_T", "COS", "BLOCK_K", "BLOCK_D")
# triton's defaults for a launch without num_warps / num_stages (CUDA backend)
DEFAULT_WARPS, DEFAULT_STAGES = 4, 3


def _ptxas() -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")


def _signature(fn, args, kwargs):
    names = fn.arg_names
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    sig, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(names):
        val = bound[name]
        if name in kwargs or fn.params[i].is_constexpr:
            sig[name] = "constexpr"
            constexprs[(i,)] = val
        elif isinstance(val, torch.Tensor):
            sig[name] = "*" + TORCH_TO_TRITON[val.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(val, bool):
            sig[name] = "i1"
        elif isinstance(val, int):
            if val == 1:  # triton specialises integer arguments equal to 1
                sig[name] = "constexpr"
                constexprs[(i,)] = 1
            else:
                sig[name] = "i64" if abs(val) >= 2**31 else "i32"
                if val % 16 == 0:
                    attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(val, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{name}: {type(val)}")
    return sig, constexprs, attrs


def _configs(kernel, kwargs):
    """(JITFunction, configs, launch kwargs without the launch options)."""
    if hasattr(kernel, "configs"):  # triton.autotune
        return kernel.fn, kernel.configs[:1] if ONE_CONFIG else kernel.configs, kwargs
    kw = dict(kwargs)
    cfg = triton.Config({}, num_warps=kw.pop("num_warps", DEFAULT_WARPS),
                        num_stages=kw.pop("num_stages", DEFAULT_STAGES))
    return kernel, [cfg], kw


def _compile(kernel, grid, *args, **kwargs):
    """Stands in for a module's ``_launch``: compiles instead of launching (grid is ignored)."""
    fn, configs, kwargs = _configs(kernel, kwargs)
    for cfg in configs:
        kw = {**kwargs, **cfg.kwargs}
        sig, constexprs, attrs = _signature(fn, args, kw)
        key = (fn.__name__, tuple(sig.items()), tuple(sorted((k[0], str(v)) for k, v in constexprs.items())),
               tuple(sorted(k[0] for k in attrs)), cfg.num_warps, cfg.num_stages)
        if key in RESULTS:
            continue
        src = ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
        try:
            c = triton.compile(src, target=GPUTarget("cuda", ARCH, 32),
                               options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
        except Exception as exc:  # noqa: BLE001 - reported, then the run fails
            RESULTS[key] = f"COMPILE ERROR {type(exc).__name__}: {str(exc)[:2000]}"
            print(fn.__name__, kw, cfg, RESULTS[key], file=sys.stderr)
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(c.asm["ptx"])
        out = subprocess.run([_ptxas(), f"-arch=sm_{ARCH}a" if ARCH >= 90 else f"-arch=sm_{ARCH}", "-v", f.name,
                              "-o", os.devnull], capture_output=True, text=True)
        os.unlink(f.name)
        regs = re.search(r"Used (\d+) registers", out.stderr)
        spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out.stderr)
        smem = c.metadata.shared
        RESULTS[key] = (f"regs={regs.group(1) if regs else '?'} spill_st={spill.group(1) if spill else '?'} "
                        f"spill_ld={spill.group(2) if spill else '?'} smem={smem}")
        ptr_dtypes = "/".join(sorted({t[1:] for t in sig.values() if t.startswith("*") and t[1:] in
                                      ("fp16", "bf16", "fp32", "fp64")}))
        flags = {k: v for k, v in kw.items() if k in SHOWN}
        print(f"{fn.__name__:28s} {ptr_dtypes:14s} {str(flags):80s} w={cfg.num_warps} s={cfg.num_stages} "
              f"{RESULTS[key]}", flush=True)


def check_linear_attention(quick: bool, dtypes):
    dtypes = dtypes or ([torch.float16, torch.float32] if quick else
                        [torch.bfloat16, torch.float16, torch.float32, torch.float64])
    fmaps = ["elu"] if quick else ["elu", "taylor", "softmax", "relu", "none"]
    dims = [(128, 128)] if quick else [(64, 64), (128, 128), (256, 256), (33, 100)]
    for dtype in dtypes:
        for Dk, Dv in dims:
            for fm in fmaps:
                for causal in (True, False):
                    q = torch.randn(1, 2, 300, Dk, dtype=dtype)
                    k = torch.randn(1, 1, 300, Dk, dtype=dtype)
                    v = torch.randn(1, 1, 300, Dv, dtype=dtype)
                    F = Dk + (fm == "taylor")
                    S0 = torch.zeros(1, 2, F, Dv)
                    z0 = torch.zeros(1, 2, F)
                    mask = torch.zeros(1, 300, dtype=torch.bool)
                    o, S, z = tk._forward_impl(q, k, v, mask, S0, z0, None, fm, causal, True, 1e-6)
                    tk._backward_impl(torch.randn_like(o), torch.randn_like(S), torch.randn_like(z), q, k, v, mask,
                                      S0, z0, None, fm, causal, True, 1e-6)


def check_cross_entropy(quick: bool, dtypes):
    """Forward (partials + combine) and both backwards through the registered ops: LLM-sized
    vocabularies, a training batch (one split per row) and a small batch (C split over programs)."""
    dtypes = [d for d in (dtypes or [torch.bfloat16, torch.float16, torch.float32]) if d != torch.float64]
    shapes = [(2048, 32000)] if quick else [(2048, 32000), (512, 128256), (16, 50257)]
    options = [(False, False, 0.0)] if quick else [(False, False, 0.0), (False, False, 0.1), (True, True, 0.1)]
    for dtype in dtypes:
        for N, C in shapes:
            logits = torch.empty((N, C), dtype=dtype)
            target = torch.zeros((N,), dtype=torch.int64)
            for has_bias, has_w, eps in options:
                bias = torch.zeros((C,), dtype=torch.float32) if has_bias else None
                weight = torch.ones((C,), dtype=torch.float32) if has_w else None
                loss, lse = tce.cross_entropy_rows_triton(logits, target, bias, weight, eps, 1e-4, -100, False)
                g = torch.ones_like(loss)
                torch.ops.kexue.ce_bwd_triton(g, logits, target, bias, weight, lse, eps, 1e-4, -100)
                torch.ops.kexue.ce_bwd_inplace_triton(g, logits, target, bias, weight, lse, eps, 1e-4, -100)


def check_probe(quick: bool, dtypes):
    """Masked batches of 128/512/1000-token rows; distances over BERT/LLM hidden sizes."""
    for length in [128] if quick else [128, 512, 1000]:
        n, n_sent = min(length, 100), 8  # 8 sentences of n one-token words
        tokens = torch.zeros((n_sent * n,), dtype=torch.int64)
        tok_offsets = torch.arange(0, n_sent * n + 1, n, dtype=torch.int64)
        word_start = torch.arange(n, dtype=torch.int64).repeat(n_sent)
        seqs = torch.tensor([[s, i, i + 1] for s in range(n_sent) for i in range(n - 1)], dtype=torch.int64)
        tp._masked_batch_impl(tokens, tok_offsets, word_start, word_start + 1, tok_offsets, seqs, 103, 0, length)
    dtypes = [d for d in (dtypes or [torch.bfloat16, torch.float16, torch.float32]) if d != torch.float64]
    for dtype in dtypes:
        for D in [768] if quick else [768, 4096, 1000]:
            h = torch.zeros((4096, D), dtype=dtype)
            K = 20000
            rows = torch.zeros((K,), dtype=torch.int64)
            for metric in ("dist", "cos"):
                tp._segment_distance_impl(h, rows, h, rows, rows, 64, metric)


CHECKS = {"la": check_linear_attention, "ce": check_cross_entropy, "probe": check_probe}


def main():
    global ARCH, ONE_CONFIG
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--op", choices=[*CHECKS, "all"], default="all", help="which op's kernels (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer variants: linear attention elu, fp16/fp32, D=128; one shape of the others")
    ap.add_argument("--one-config", action="store_true", help="only the first autotune config of each kernel")
    ap.add_argument("--dtype", action="append", choices=["bfloat16", "float16", "float32", "float64"],
                    help="restrict to these input dtypes (repeatable)")
    a = ap.parse_args()
    ARCH, ONE_CONFIG = a.arch, a.one_config
    tk._launch = tce._launch = tp._launch = _compile
    dtypes = [getattr(torch, d) for d in a.dtype] if a.dtype else None
    print(f"triton {triton.__version__}, sm_{ARCH}")
    for op in CHECKS if a.op == "all" else [a.op]:
        CHECKS[op](a.quick, dtypes)
    bad = [k for k, v in RESULTS.items() if v.startswith("COMPILE ERROR")]
    spills = [k for k, v in RESULTS.items() if "spill_st=0 " not in v and not v.startswith("COMPILE")]
    print(f"{len(RESULTS)} variants compiled, {len(bad)} errors, {len(spills)} with spills")
    return 1 if bad else 0


ARCH = 90
ONE_CONFIG = False

if __name__ == "__main__":
    sys.exit(main())
