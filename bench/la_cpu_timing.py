"""CPU linear-attention timing table: the "torch" reference vs the "cpu" C++ kernel (and
fast-transformers' causal_dot_product when installed).

    python bench/la_cpu_timing.py [--repeats 7] [--threads N] [--shapes 1024,4096]

Prints, per (N, causal, pass): the median time of each provider over ``--repeats`` runs (after one
warm-up; the providers take turns within each repeat), the spread ((max - min) / median), the
ratio provider / cpu (> 1: the cpu kernel is faster), and the peak memory each provider allocates
during one call (torch.profiler memory events, running max of the allocated bytes) relative to
the bytes of inputs + outputs.
Float32, B=2, H=4, D=64, feature map elu, normalized.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import kexue
from kexue.benchmarking import time_in_turns

try:
    from fast_transformers.causal_product import causal_dot_product as _ft_causal_dot_product
except ImportError:  # optional comparison
    _ft_causal_dot_product = None

B, H, D = 2, 4, 64
EPS = 1e-6
CLOCK = time.perf_counter  # --clock cpu: time.process_time (all threads' CPU time; robust to
#                            preemption on a shared machine, comparable between providers at equal threads)


def fast_transformers_causal(q, k, v):
    """fast-transformers' CausalLinearAttention (elu+1 feature map, normalized), (B, H, N, D) layout."""
    Q = torch.nn.functional.elu(q) + 1
    K = torch.nn.functional.elu(k) + 1
    Z = 1 / (torch.einsum("bhnd,bhnd->bhn", Q, K.cumsum(2)) + EPS)
    return _ft_causal_dot_product(Q, K, v) * Z[..., None]


def providers(causal: bool) -> dict:
    out = {
        "torch": lambda q, k, v: kexue.linear_attention(q, k, v, causal=causal, backend="torch"),
        "cpu": lambda q, k, v: kexue.linear_attention(q, k, v, causal=causal, backend="cpu"),
    }
    if causal and _ft_causal_dot_product is not None:
        out["fast_transformers"] = fast_transformers_causal
    return out


def make_case(N: int, backward: bool):
    q, k, v = (torch.randn(B, H, N, D) for _ in range(3))
    if backward:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
    grad = torch.randn(B, H, N, D)
    return q, k, v, grad


def step(fn, q, k, v, grad, backward: bool):
    if backward:
        q.grad = k.grad = v.grad = None
        out = fn(q, k, v)
        out.backward(grad)
    else:
        with torch.no_grad():
            fn(q, k, v)


def time_all(fns: dict, case, backward: bool, repeats: int) -> dict[str, list[float]]:
    """Times (CLOCK) of each provider, taking turns within every repeat (time_in_turns)."""
    steps = {name: (lambda fn=fn: step(fn, *case, backward)) for name, fn in fns.items()}
    return time_in_turns(steps, repeats, clock=CLOCK)


def peak_bytes(fn, case, backward: bool) -> int:
    """Running max of the bytes allocated during one call (memory events in start order)."""
    step(fn, *case, backward)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(fn, *case, backward)
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def io_bytes(N: int, backward: bool) -> tuple[int, int]:
    """(inputs, outputs) of the call: q, k, v -> out (forward); q, k, v, grad_out -> out, dq, dk, dv."""
    one = B * H * N * D * 4
    return (one * 4, one * 4) if backward else (one * 3, one)


def cpu_isa() -> str:
    """The code path the kernels take in this process (csrc/common/cpu_isa.h; KEXUE_CPU_ISA caps it)."""
    from kexue._ext import cpu_isa as isa

    return f"{isa()} path"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--shapes", default="1024,4096", help="comma-separated sequence lengths N")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: time.perf_counter; cpu: time.process_time (CPU time of all threads)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kexue cpu kernels: "
          f"{cpu_isa()}, "
          f"fast-transformers: {'yes' if _ft_causal_dot_product is not None else 'not installed'}")
    print(f"float32, B={B}, H={H}, Dk=Dv={D}, elu, normalize; {args.clock} clock, median of {args.repeats} runs "
          "(spread = (max-min)/median)")
    header = f"{'N':>5} {'causal':>6} {'pass':>7} {'provider':>17} {'median ms':>10} {'spread':>7} " \
             f"{'x vs cpu':>8} {'peak MB':>8} {'peak/io':>7}"
    print(header)
    print("-" * len(header))
    for N in (int(n) for n in args.shapes.split(",")):
        for causal in (True, False):
            for backward in (False, True):
                case = make_case(N, backward)
                fns = providers(causal)
                rows = {}
                for name, ts in time_all(fns, case, backward, args.repeats).items():
                    med = statistics.median(ts)
                    rows[name] = (med, (max(ts) - min(ts)) / med, peak_bytes(fns[name], case, backward))
                base = rows["cpu"][0]
                inputs, outputs = io_bytes(N, backward)
                for name, (med, spread, peak) in rows.items():
                    # peak/io: (inputs already alive + peak allocated during the call) / (inputs + outputs)
                    print(f"{N:>5} {str(causal):>6} {'fwd+bwd' if backward else 'fwd':>7} {name:>17} "
                          f"{med * 1e3:>10.2f} {spread:>7.0%} {med / base:>8.2f} {peak / 2**20:>8.1f} "
                          f"{(inputs + peak) / (inputs + outputs):>7.2f}")


if __name__ == "__main__":
    main()
