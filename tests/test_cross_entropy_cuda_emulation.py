"""The CUDA cross-entropy kernels run on the CPU: tests/cuda_emulation/ce_kernels_emu.cpp compiles
csrc/cross_entropy/ce_kernels.cuh and its launchers (run_fwd / run_bwd) with g++ on the CUDA
stand-ins of tests/cuda_emulation/cuda_host_emu.h (one fiber per CUDA thread, barriers for warp
shuffles and __syncthreads) and checks forward, backward, in place and the error word against a
float64 reference on ~100 cases (row groups of 32..1024 threads, contiguous / misaligned /
strided rows, all dtypes and options).  It needs only g++ (C++20) and the CUDA headers, not a
GPU; skipped when they are missing.  The GPU itself (memory model, compute-sanitizer, speed) is
covered by bench/gpu_check_cross_entropy.py.
"""

from __future__ import annotations

from helpers import run_cuda_emulator


def test_cuda_kernels_under_host_emulation(tmp_path):
    run_cuda_emulator("ce_kernels_emu", tmp_path, min_pass=100)
