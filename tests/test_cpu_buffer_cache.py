"""The cache of large CPU output buffers (csrc/common/cpu_buffer_cache.h): the CPU cross-entropy
backward takes its N×C gradient from it, so that a training loop does not fault 500 MiB of fresh
pages in at every step.  What must hold: the gradient is exact whatever stale data a reused
buffer held; a freed gradient is reused (same address, almost no page faults); the limit
KEXUE_CPU_CACHE_MB bounds what is kept (0 turns it off); kexue.empty_cpu_cache() releases it; the
profiler still sees the allocation; a bad limit is a clear error."""

from __future__ import annotations

import resource

import pytest
import torch
import torch.nn.functional as F

import kexue
from kexue import _ext
from kexue.benchmarking import peak_memory

N, C = 512, 12288  # a 24 MiB float32 gradient: above the cache's 16 MiB threshold
PAGE = resource.getpagesize()


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, generator=g).requires_grad_()
    t = torch.randint(0, C, (N,), generator=g)
    return x, t


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.delenv("KEXUE_CPU_CACHE_MB", raising=False)
    kexue.empty_cpu_cache()
    yield
    kexue.empty_cpu_cache()


def grad_of(x, t, **kw):
    return torch.autograd.grad(kexue.cross_entropy(x, t, backend="cpu", **kw), x)[0]


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_freed_gradient_is_reused_without_page_faults(case):
    x, t = case
    g1 = grad_of(x, t)
    ptr, nbytes = g1.data_ptr(), g1.nbytes
    del g1
    assert _ext.cpu_cache_bytes() == nbytes
    f0 = minor_faults()
    g2 = grad_of(x, t)
    faults = minor_faults() - f0
    assert g2.data_ptr() == ptr and _ext.cpu_cache_bytes() == 0
    assert faults < nbytes // PAGE // 20, faults  # a fresh buffer costs nbytes / PAGE faults


def test_reused_buffer_is_overwritten_whole(case):
    """Stale values of the previous gradient must not survive: ignored rows are written as zeros."""
    x, t = case
    garbage = grad_of(x * 50, t)
    garbage.fill_(float("nan"))
    del garbage
    t2 = t.clone()
    t2[::3] = -100
    got = grad_of(x, t2, reduction="sum")
    want = torch.autograd.grad(F.cross_entropy(x.double(), t2, reduction="sum"), x)[0]
    ref32 = torch.autograd.grad(F.cross_entropy(x, t2, reduction="sum"), x)[0]
    assert torch.isfinite(got).all()
    assert (got[::3] == 0).all()
    assert (got - want).abs().max() <= 2 * (ref32 - want).abs().max() + 1e-12


def test_limit_zero_turns_the_cache_off(case, monkeypatch):
    monkeypatch.setenv("KEXUE_CPU_CACHE_MB", "0")
    x, t = case
    del_grad = grad_of(x, t)
    del del_grad
    assert _ext.cpu_cache_bytes() == 0


def test_limit_below_the_buffer_keeps_nothing(case, monkeypatch):
    monkeypatch.setenv("KEXUE_CPU_CACHE_MB", "20")  # the gradient is 24 MiB
    x, t = case
    g = grad_of(x, t)
    del g
    assert _ext.cpu_cache_bytes() == 0


def test_small_buffers_bypass_the_cache():
    x = torch.randn(64, 1000, requires_grad=True)
    g = grad_of(x, torch.randint(0, 1000, (64,)))
    del g
    assert _ext.cpu_cache_bytes() == 0


def test_empty_cpu_cache_releases_everything(case):
    x, t = case
    g = grad_of(x, t)
    nbytes = g.nbytes
    del g
    assert kexue.empty_cpu_cache() == nbytes
    assert _ext.cpu_cache_bytes() == 0 and kexue.empty_cpu_cache() == 0


def test_gradient_held_by_the_caller_is_not_reused(case):
    x, t = case
    g1 = grad_of(x, t)
    keep = g1.clone()
    g2 = grad_of(x * 2, t)
    assert g2.data_ptr() != g1.data_ptr() and torch.equal(g1, keep)


def test_cached_tensor_is_an_ordinary_tensor(case):
    x, t = case
    g = grad_of(x, t)
    g.resize_(N + 1, C)  # the storage grows through the cache's allocator
    g[-1] = 1.0
    assert g.shape == (N + 1, C) and g.is_contiguous()


def test_profiler_sees_the_gradient(case):
    """kexue.benchmarking.peak_memory (torch's profiler) counts a cached buffer as an allocation."""
    x, t = case
    grad_of(x, t)  # warm: the next call's buffer comes from the cache
    peak = peak_memory(lambda: grad_of(x, t), torch.device("cpu"))
    assert peak >= N * C * 4


def test_bad_limit_is_a_clear_error(case, monkeypatch):
    monkeypatch.setenv("KEXUE_CPU_CACHE_MB", "lots")
    x, t = case
    with pytest.raises(RuntimeError, match="KEXUE_CPU_CACHE_MB"):
        grad_of(x, t)


def _grad_in_child(queue) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, C, generator=g).requires_grad_()
    t = torch.randint(0, C, (N,), generator=g)
    ok = torch.allclose(grad_of(x, t), torch.autograd.grad(F.cross_entropy(x, t), x)[0], atol=1e-6)
    queue.put(ok)


def test_forked_child_uses_the_cache_while_the_parent_works(case):
    """DataLoader workers fork: children forked while a thread keeps the cache busy must each finish
    and get exact gradients from the cache.  A smoke test: the race it guards against (a fork while
    the lock is held, a few microseconds per call) is too rare to hit on demand; the cache takes its
    lock around fork() (pthread_atfork) so that it cannot happen.  One intra-op thread: a fork
    inside another thread's OpenMP region hangs the child in libgomp whatever the cache does
    (torch's own hazard, not this test's subject)."""
    import multiprocessing as mp
    import threading

    x, t = case
    stop = threading.Event()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def churn():
        while not stop.is_set():
            del_me = grad_of(x, t)
            del del_me

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        ctx = mp.get_context("fork")
        for _ in range(4):
            queue = ctx.Queue()
            child = ctx.Process(target=_grad_in_child, args=(queue,))
            child.start()
            child.join(timeout=120)
            assert child.exitcode == 0, "a child forked while the cache was busy did not finish"
            assert queue.get(timeout=5)
    finally:
        stop.set()
        worker.join()
        torch.set_num_threads(threads)
