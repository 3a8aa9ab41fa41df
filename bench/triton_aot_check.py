"""Compiles every Triton linear-attention kernel variant for a GPU target without a GPU.

Runs the real host code (block sizes, segment count, flags) on CPU tensors, but instead of
launching each kernel it compiles it for ``--arch`` (default sm_90) with every autotune config and
reports registers and spills from ptxas.  Catches compile errors and register spills on machines
without a GPU; it says nothing about speed.

    python bench/triton_aot_check.py [--arch 90] [--quick]
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

import kexue.triton_kernels.linear_attention as tk  # noqa: E402

TORCH_TO_TRITON = {
    torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
    torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64", torch.bool: "i1",
}
RESULTS: dict[tuple, str] = {}


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


def _compile(kernel, n_programs, *args, **kwargs):
    fn = kernel.fn
    for cfg in kernel.configs[:1] if ONE_CONFIG else kernel.configs:
        kw = {**kwargs, **cfg.kwargs}
        sig, constexprs, attrs = _signature(fn, args, kw)
        key = (fn.__name__, tuple(sig.items()), tuple(sorted((k[0], str(v)) for k, v in constexprs.items())),
               cfg.num_warps, cfg.num_stages)
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
        flags = {k: v for k, v in kw.items() if k in ("FMAP", "CAUSAL", "STATS", "BWD", "BT", "BK", "BV")}
        print(f"{fn.__name__:28s} {str(flags):80s} w={cfg.num_warps} s={cfg.num_stages} {RESULTS[key]}")


def main():
    global ARCH
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("--quick", action="store_true", help="elu, fp16/fp32 and D=128 only")
    ap.add_argument("--one-config", action="store_true", help="only the first autotune config of each kernel")
    ap.add_argument("--dtype", action="append", choices=["bfloat16", "float16", "float32", "float64"],
                    help="restrict to these input dtypes (repeatable)")
    a = ap.parse_args()
    global ONE_CONFIG
    ARCH, ONE_CONFIG = a.arch, a.one_config
    tk._launch = _compile
    dtypes = [torch.float16, torch.float32]
    if not a.quick:
        dtypes = [torch.bfloat16, torch.float16, torch.float32, torch.float64]
    if a.dtype:
        dtypes = [getattr(torch, d) for d in a.dtype]
    fmaps = ["elu"] if a.quick else ["elu", "taylor", "softmax", "relu", "none"]
    dims = [(128, 128)] if a.quick else [(64, 64), (128, 128), (256, 256), (33, 100)]
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
    bad = [k for k, v in RESULTS.items() if v.startswith("COMPILE ERROR")]
    spills = [k for k, v in RESULTS.items() if "spill_st=0 " not in v and not v.startswith("COMPILE")]
    print(f"{len(RESULTS)} variants compiled, {len(bad)} errors, {len(spills)} with spills")
    return 1 if bad else 0


ARCH = 90
ONE_CONFIG = False

if __name__ == "__main__":
    sys.exit(main())
