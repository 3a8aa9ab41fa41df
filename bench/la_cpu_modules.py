"""Linear attention on the CPU against fast-transformers' own attention modules (issue 16).

la_cpu_roofline.py compares the bare causal product with fast-transformers' ``causal_dot_product``;
fast-transformers has no bare non-causal op, so the issue's "the same for non-causal" is measured here
at the module level, where a user meets it: fast-transformers 0.4.0's ``LinearAttention`` (non-causal)
and ``CausalLinearAttention`` (both elu + 1 feature map, normalized, eps 1e-6; inputs in their (B, N, H,
D) layout) against ``kexue.linear_attention(feature_map="elu", normalize=True)`` on (B, H, N, D)
inputs.  GFLOP/s count the six N·D² products of forward + backward (12·B·H·N·D² FLOPs; the feature map
and normaliser are extra), against the machine's float32 GEMM ceiling measured in the same run
(``kexue.benchmarking.measure_ceilings``): a ratio to fast-transformers above ceiling / its rate is out
of reach for any implementation.  Each provider gets contiguous float32 inputs in its own layout;
forward + backward (gradients of q, k, v for a random output gradient), B2 H4 N4096, D in ``--dims``;
process CPU time, medians of ``--repeats`` rounds in which the providers take turns.

fast-transformers is imported from an installed package, or from its source tree (``--ft-path``, the
unpacked PyPI sdist): importing ``fast_transformers.attention`` loads every compiled extension of the
package, so modules that are not built (``*_cpu`` / ``*_cuda``, e.g. clustering and hashing, which these
two modules never call) are replaced by stubs that raise if called.  ``causal_dot_product``'s CPU
extension must be built (see RESULTS.md, "Linear attention, CPU: against the measured GEMM rate").

    python bench/la_cpu_modules.py [--ft-path DIR] [--threads 1] [--repeats 7] [--dims 64,128] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import statistics
import sys
import time
import types

import torch

import kexue
from kexue.benchmarking import cpu_model, measure_ceilings, spread, time_in_turns

B, H, N = 2, 4, 4096
EPS = 1e-6


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is not built (a stub of la_cpu_modules.py)")
        return missing


class _StubUnbuiltExtensions(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds fast_transformers' compiled extension modules that no other finder finds, as stubs."""

    def find_spec(self, fullname, path, target=None):
        if not (fullname.startswith("fast_transformers.") and fullname.endswith(("_cpu", "_cuda"))):
            return None
        for finder in sys.meta_path:
            if finder is not self and getattr(finder, "find_spec", None) and finder.find_spec(fullname, path, target):
                return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        pass


def fast_transformers_modules(ft_path: str | None):
    """fast-transformers' (LinearAttention, CausalLinearAttention, FullMask, LengthMask, TriangularCausalMask),
    or None."""
    if ft_path:
        sys.path.insert(0, ft_path)
        sys.meta_path.insert(0, _StubUnbuiltExtensions())
    try:
        from fast_transformers.attention.causal_linear_attention import CausalLinearAttention
        from fast_transformers.attention.linear_attention import LinearAttention
        from fast_transformers.masking import FullMask, LengthMask, TriangularCausalMask
    except ImportError as e:
        print(f"fast-transformers not importable ({e}); kexue rows only")
        return None
    return LinearAttention, CausalLinearAttention, FullMask, LengthMask, TriangularCausalMask


def providers(D: int, causal: bool, ft) -> dict:
    """name -> fwd+bwd closure, each on its own inputs."""
    g = torch.Generator().manual_seed(0)
    q, k, v, go = (torch.randn(B, H, N, D, generator=g) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def kexue_fn():
        out = kexue.linear_attention(q, k, v, causal=causal, feature_map="elu", normalize=True, eps=EPS,
                                     backend="cpu")
        return torch.autograd.grad(out, (q, k, v), go)
    fns = {"kexue (cpu)": kexue_fn}
    if ft is not None:
        LinearAttention, CausalLinearAttention, FullMask, LengthMask, TriangularCausalMask = ft
        att = (CausalLinearAttention if causal else LinearAttention)(D, eps=EPS)
        qn, kn, vn, gon = (t.detach().transpose(1, 2).contiguous() for t in (q, k, v, go))  # (B, N, H, D)
        qn, kn, vn = (t.requires_grad_() for t in (qn, kn, vn))
        attn_mask = TriangularCausalMask(N) if causal else FullMask(N)
        lengths = LengthMask(torch.full((B,), N, dtype=torch.long), max_len=N)

        def ft_fn():
            out = att(qn, kn, vn, attn_mask, lengths, lengths)
            return torch.autograd.grad(out, (qn, kn, vn), gon)
        fns["fast-transformers " + type(att).__name__] = ft_fn
    return fns


def check_same(fns: dict) -> float:
    """Largest relative difference of the two providers' q gradients (they compute the same function)."""
    grads = [fn()[0] for fn in fns.values()]
    if len(grads) < 2:
        return float("nan")
    a, b = grads[0], grads[1].transpose(1, 2)
    return float((a - b).abs().max() / b.abs().max())


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ft-path", default=None, help="fast-transformers source tree (the unpacked sdist)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dims", default="64,128")
    ap.add_argument("--quick", action="store_true", help="N = 256, D = 16, 2 repeats (the test)")
    args = ap.parse_args(argv)
    global N
    if args.quick:
        N, args.dims, args.repeats = 256, "16", 2
    torch.set_num_threads(args.threads)
    ft = fast_transformers_modules(args.ft_path)
    ceiling = measure_ceilings(torch.device("cpu"), repeats=args.repeats)["fp32_GFLOPs"]
    lines = [f"{cpu_model()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, kexue CPU path "
             f"{kexue._ext.cpu_isa()}; B{B} H{H} N{N} float32, elu + 1, normalized, fwd+bwd; CPU time, medians of "
             f"{args.repeats} rounds in turns; float32 GEMM ceiling {ceiling:.1f} GFLOP/s",
             "| D | causal | provider | median ms | spread | GFLOP/s | × fast-transformers | most possible × | "
             "max rel. diff of dq |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for D in (int(d) for d in args.dims.split(",")):
        for causal in (True, False):
            fns = providers(D, causal, ft)
            diff = check_same(fns)
            times = time_in_turns(fns, args.repeats, clock=time.process_time)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            peer = next((m for name, m in med.items() if name.startswith("fast-transformers")), None)
            flops = 12 * B * H * N * D * D
            for name, ts in times.items():
                ratio = f"{peer / med[name]:.2f}" if peer is not None else "-"
                bound = f"{peer * ceiling * 1e9 / flops:.2f}" if peer is not None else "-"
                lines.append(f"| {D} | {causal} | {name} | {1e3 * med[name]:.1f} | {spread(ts):.0%} | "
                             f"{flops / med[name] / 1e9:.1f} | {ratio} | {bound} | {diff:.1e} |")
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
