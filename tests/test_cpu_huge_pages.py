"""With KEXUE_HUGE_PAGES=1 the CPU cross-entropy backward advises its fresh gradient into
transparent huge pages (csrc/common/cpu_huge_pages.h; off by default): the gradient stays exact
either way, and on Linux with THP in "madvise" mode the buffer is backed by 2 MiB pages exactly
when the advice is on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import kexue
from helpers import load_bench_script

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The bracketed THP mode ("always", "madvise", "never"), None where there is none."""
    try:
        text = THP.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")]


def anon_huge_kib(ptr: int) -> int:
    """AnonHugePages (KiB) of the mapping of this process that holds address ``ptr``."""
    lo = hi = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
        elif head == "AnonHugePages:" and lo is not None and lo <= ptr < hi:
            return int(line.split()[1])
    raise AssertionError(f"no mapping holds {ptr:#x}")


def grad_of(x, t):
    return torch.autograd.grad(kexue.cross_entropy(x, t, backend="cpu"), x)[0]


@pytest.fixture
def big():
    g = torch.Generator().manual_seed(0)
    # a 48 MiB gradient: above kexue's 8 MiB threshold, and above glibc's largest mmap threshold
    # (32 MiB), so each buffer is a fresh mapping, never heap memory an earlier buffer left behind
    N, C = 1024, 12288
    return torch.randn(N, C, generator=g).requires_grad_(), torch.randint(0, C, (N,), generator=g)


@pytest.mark.parametrize("advice", ["1", "0"])
def test_gradient_exact_with_and_without_huge_pages(big, advice, monkeypatch):
    monkeypatch.setenv("KEXUE_HUGE_PAGES", advice)
    monkeypatch.setenv("KEXUE_CPU_CACHE_MB", "0")  # a fresh buffer, the one the advice applies to
    x, t = big
    want = torch.autograd.grad(F.cross_entropy(x.double(), t), x)[0]
    got = grad_of(x, t)
    ref32 = torch.autograd.grad(F.cross_entropy(x, t), x)[0]
    assert (got - want).abs().max() <= 2 * (ref32 - want).abs().max() + 1e-12


CHILD = """
import os, sys
os.environ["KEXUE_CPU_CACHE_MB"] = "0"  # every gradient a fresh mapping (no reuse of the advised one)
import torch, kexue
sys.path.insert(0, {tests!r})
from test_cpu_huge_pages import anon_huge_kib
g = torch.Generator().manual_seed(0)
N, C = 1024, 12288
x = torch.randn(N, C, generator=g).requires_grad_()
t = torch.randint(0, C, (N,), generator=g)
out = []
for advice in ("1", "0"):
    os.environ["KEXUE_HUGE_PAGES"] = advice
    grad = torch.autograd.grad(kexue.cross_entropy(x, t, backend="cpu"), x)[0]
    out.append(anon_huge_kib(grad.data_ptr() + grad.nbytes // 2))  # the advised interior's mapping
print(*out)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or thp_mode() != "madvise",
                    reason="needs Linux with transparent huge pages in 'madvise' mode (there 'always' "
                           "backs every buffer and 'never' none, whatever kexue advises)")
def test_gradient_buffer_backed_by_huge_pages_only_when_advised():
    # In a fresh process: inside pytest, after the tests above, the advised buffer was at times
    # found without huge pages (not explained yet); a fresh process shows it every time.
    code = CHILD.format(tests=str(Path(__file__).resolve().parent))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    advised, plain = (int(v) for v in res.stdout.split())
    assert advised >= 2048 and plain == 0, (advised, plain)


def test_timing_script_quick(capsys):
    mod = load_bench_script("ce_cpu_timing")
    med = mod.main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    assert set(med) == {"F.cross_entropy", "kexue cpu", "kexue cpu, no cache", "kexue cpu, no cache, THP",
                        "torch LA+flood", "kexue LA+flood", "kexue LA+flood, no cache"}
    assert all(v > 0 for v in med.values()) and "faults/call" in out and "seed 0" in out
