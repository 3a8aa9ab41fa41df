"""`python -m kexue bench`: every op side by side with its reference on the current device.

Each op contributes cases from ``kexue.<op>.bench.cases(device, quick)``.  A case has one
setup per provider ("torch" reference, kexue backends, named peers when installed); each setup
builds fresh inputs and returns a zero-argument callable that runs the work once.  Times are
medians over repeats (CUDA events on GPUs, perf_counter on CPUs), with the spread (max-min over
median) so noise can be told from a difference; peak memory is measured in a separate run.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ._ext import cpu_isa
from .cpu_linear import onednn_available

OPS = {
    "linear_attention": "kexue.linear_attention.bench",
    "cross_entropy": "kexue.cross_entropy.bench",
    "probe": "kexue.probe.bench",
    "vae": "kexue.vae.bench",
    "sample": "kexue.decoding.bench",
    "attribution": "kexue.attribution.bench",
    "theseus": "kexue.theseus.bench",
}


@dataclass
class BenchCase:
    op: str
    shape: str
    mode: str  # "fwd" or "fwd+bwd"
    providers: dict[str, Callable[[], Callable[[], object]]] = field(default_factory=dict)
    reference: str = "torch"
    input_bytes: int = 0  # allocated before the timed function runs
    output_bytes: int = 0  # what the function must return at the least


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), for the header of every timing table."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread(times: list[float]) -> float:
    """(max - min) / median of a list of timings (0 when the median is 0)."""
    med = statistics.median(times)
    return (max(times) - min(times)) / med if med > 0 else 0.0


def _timed_call(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call: CUDA events on a GPU, the wall clock on the CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _in_turns(fns: dict[str, Callable[[], object]], repeats: int, warmup: int, clocks: tuple[str, ...],
              measure: Callable[[Callable[[], object]], dict[str, float]],
              before_rounds: Callable[[], None] = lambda: None) -> dict[str, dict[str, list[float]]]:
    """The one turn loop behind every timer here: ``warmup`` calls of each of ``fns``, then
    ``repeats`` rounds in which the functions take turns (a change of load on a shared machine, or
    of clocks, hits them alike instead of whichever ran last); ``measure(fn)`` calls fn once and
    returns its time on each of ``clocks``.  Returns {clock: {fn name: times}}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    before_rounds()
    times: dict[str, dict[str, list[float]]] = {c: {name: [] for name in fns} for c in clocks}
    for _ in range(repeats):
        for name, fn in fns.items():
            for c, t in measure(fn).items():
                times[c][name].append(t)
    return times


def time_fns(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
             warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each of ``fns`` after ``warmup`` calls of each (CUDA events
    on a GPU, the wall clock on the CPU), the functions taking turns within every round."""
    return _in_turns(fns, repeats, warmup, ("t",), lambda fn: {"t": _timed_call(fn, device)},
                     lambda: _sync(device))["t"]


def time_fn(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median seconds, spread = (max - min) / median) over ``repeats`` runs after ``warmup``."""
    times = time_fns({"fn": fn}, device, repeats, warmup)["fn"]
    return statistics.median(times), spread(times)


def time_in_turns(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                  clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """CPU times (by ``clock``) of each of ``fns`` over ``repeats`` rounds, after ``warmup`` calls
    of each; within every round the functions take turns, so a change of load on a shared
    machine hits them alike."""
    return times_in_turns(fns, repeats, warmup, {"t": clock})["t"]


def times_in_turns(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                   clocks: dict[str, Callable[[], float]]) -> dict[str, dict[str, list[float]]]:
    """:func:`time_in_turns` read on several clocks at once (e.g. wall and process CPU time of the
    same calls): {clock name: {fn name: times}}."""

    def measure(fn: Callable[[], object]) -> dict[str, float]:
        t0 = {c: clock() for c, clock in clocks.items()}
        fn()
        return {c: clock() - t0[c] for c, clock in clocks.items()}

    return _in_turns(fns, repeats, warmup, tuple(clocks), measure)


# What torch's profiler (Kineto) writes to the process's stderr from C++ at every start and stop
# (``USDT:... SyncActivityProfilerHandler.cpp:52] profiler_start``), and its memory profiler when
# the measured call frees a block allocated before the profile started (``[W... CPUAllocator.cpp]
# Memory block of unknown size ...``: that free is not counted, so the peak can only be over-,
# never under-estimated); no setting silences either.
PROFILER_NOISE = ("USDT:", "Memory block of unknown size was allocated before the profiling started")


@contextlib.contextmanager
def _native_stderr_without(markers: tuple[str, ...]):
    """Runs the body with file descriptor 2 (where C++ code writes) sent to a temporary file,
    then writes back to descriptor 2 every line that contains none of ``markers``: the
    profiler's chatter goes, other warnings and errors stay (in order, after the body)."""
    fd = 2  # C++ writes to the descriptor, whatever Python's sys.stderr is
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 (a daemon): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            drop = [m.encode() for m in markers]
            kept = [line for line in tmp.read().splitlines(keepends=True) if not any(m in line for m in drop)]
            if kept:
                os.write(fd, b"".join(kept))


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated while ``fn`` runs, above what was allocated before it.

    The table's ``mem/io`` column is (inputs + this peak) / (inputs + outputs): 1.0 means the
    op allocated nothing beyond its outputs."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_without(PROFILER_NOISE), profile(activities=[ProfilerActivity.CPU],
                                                          profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


CPU_GEMM_SIZE = 2048  # the CPU ceiling's square fp32 product: 17 GFLOP, large enough for peak rate


def cpu_gemm_providers(m: int = CPU_GEMM_SIZE) -> tuple[dict[str, Callable[[], object]], int]:
    """({name: fn}, FLOPs per call): an m³ float32 product on random data through torch's BLAS
    (``torch.mm``; MKL in the official builds, its AVX2 code on AMD) and through oneDNN
    (:mod:`kexue.cpu_linear`, which picks AVX-512 where the CPU has it), with the threads torch is
    set to.  For timing in turns next to the kernels they bound."""
    from . import cpu_linear

    x, y = torch.randn(m, m), torch.randn(m, m)
    fns: dict[str, Callable[[], object]] = {"gemm torch.mm": lambda: torch.mm(x, y)}
    if cpu_linear.onednn_available():
        fns["gemm oneDNN"] = lambda: cpu_linear.linear(x, y)
    return fns, 2 * m**3


def measure_ceilings(device: torch.device, repeats: int = 10) -> dict[str, float]:
    """The ceilings of a device, measured (METHOD: datasheet rates are leads only).

    CUDA: ``copy_GBps``, a 2 GiB device-to-device copy counting bytes read plus written, and
    ``bf16_TFLOPs``, an 8192³ bf16 matrix product on random data (never zeros: they run faster).
    CPU: ``fp32_GFLOPs``, the faster of torch.mm and oneDNN on a 2048³ float32 product with the
    threads torch is set to (median CPU time, :func:`cpu_gemm_providers`; also returned per
    library as ``fp32_GFLOPs_torch.mm`` / ``fp32_GFLOPs_oneDNN``)."""
    if device.type == "cpu":
        fns, flops = cpu_gemm_providers()
        times = time_in_turns(fns, repeats, clock=time.process_time)
        rates = {f"fp32_GFLOPs_{name.split()[-1]}": flops / statistics.median(v) / 1e9 for name, v in times.items()}
        return {"fp32_GFLOPs": max(rates.values()), **rates}
    if device.type != "cuda":
        raise ValueError(f"measure_ceilings needs a CUDA or CPU device, got {device}")
    def copy_seconds(n: int) -> float:
        a = torch.randn(n, device=device, dtype=torch.bfloat16)
        b = torch.empty_like(a)
        return time_fn(lambda: b.copy_(a), device, repeats, warmup=3)[0]

    def matmul_seconds(m: int) -> float:
        x = torch.randn(m, m, device=device, dtype=torch.bfloat16)
        y = torch.randn(m, m, device=device, dtype=torch.bfloat16)
        return time_fn(lambda: x @ y, device, repeats, warmup=3)[0]

    n, m = 2**30 // 2, 8192  # 1 GiB of bf16 each way; the product's operands
    out = {"copy_GBps": 2 * 2 * n / copy_seconds(n) / 1e9, "bf16_TFLOPs": 2 * m**3 / matmul_seconds(m) / 1e12}
    torch.cuda.empty_cache()
    return out


@dataclass
class Row:
    case: BenchCase
    provider: str
    seconds: float
    spread: float
    peak: int
    ratio: float | None = None


def run_case(case: BenchCase, device: torch.device, repeats: int) -> list[Row]:
    """One row per provider: the providers take turns in every timed round (time_fns), then each
    is run once more for its peak memory."""
    fns = {name: setup() for name, setup in case.providers.items()}
    times = time_fns(fns, device, repeats)
    rows = [Row(case, name, statistics.median(ts), spread(ts), peak_memory(fns[name], device))
            for name, ts in times.items()]
    fns.clear()
    ref = next((r for r in rows if r.provider == case.reference), None)
    for r in rows:
        r.ratio = ref.seconds / r.seconds if ref and r.seconds > 0 else None
    return rows


def format_table(rows: list[Row]) -> str:
    head = f"{'op':<24} {'shape':<28} {'mode':<8} {'provider':<12} {'median ms':>10} {'spread':>7} " \
           f"{'peak MiB':>9} {'mem/io':>7} {'x ref':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        io = r.case.input_bytes + r.case.output_bytes
        memio = f"{(r.case.input_bytes + r.peak) / io:7.2f}" if io else f"{'':>7}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'':>6}"
        lines.append(
            f"{r.case.op:<24} {r.case.shape:<28} {r.case.mode:<8} {r.provider:<12} {r.seconds * 1e3:10.3f} "
            f"{r.spread:7.0%} {r.peak / 2**20:9.1f} {memio} {ratio}"
        )
    return "\n".join(lines)


def progress_line(i: int, total: int, case: BenchCase, repeats: int) -> str:
    """What ``kexue bench`` prints (to stderr) as case ``i`` of ``total`` starts."""
    return (f"[{i}/{total}] {case.op} {case.shape} {case.mode}: {', '.join(case.providers)} "
            f"({repeats} timed runs each, in turns, then one for memory)")


def environment(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    gemm = "oneDNN" if onednn_available() else "torch's BLAS"
    return (f"device: {name} ({device}), torch {torch.__version__}, {threads} CPU threads, "
            f"CPU kernels: {cpu_isa()} path, CPU float32 linear layers: {gemm}")


@contextlib.contextmanager
def _without_hf_progress_bars():
    """Hugging Face's "Loading weights" bar of every model the cases load, off while they run (the
    table has its own progress line per case); restored afterwards."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # the cases that load models need transformers; the others run without it
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def main(ops: list[str] | None = None, device: str | None = None, repeats: int = 7, quick: bool = False) -> str:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows: list[Row] = []
    print(environment(dev), flush=True)
    for op in ops or list(OPS):
        if op not in OPS:
            raise SystemExit(f"unknown op {op!r}; known: {', '.join(OPS)}")
    with _without_hf_progress_bars():
        cases = [case for op in ops or list(OPS) for case in importlib.import_module(OPS[op]).cases(dev, quick)]
        for i, case in enumerate(cases, 1):
            print(progress_line(i, len(cases), case, repeats), file=sys.stderr, flush=True)
            case_rows = run_case(case, dev, repeats)
            rows.extend(case_rows)
            print("\n".join(format_table(case_rows).splitlines()[2:]), flush=True)
    table = format_table(rows)
    print()
    print(table)
    return table
