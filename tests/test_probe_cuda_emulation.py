"""The CUDA probe kernels run on the CPU: tests/cuda_emulation/probe_kernels_emu.cpp compiles
csrc/probe/probe_kernels.cu (the launchers launch_masked_batch / launch_segment_distance and
their kernels) with g++ on the CUDA stand-ins of tests/cuda_emulation/cuda_host_emu.h and checks
them against a reference written from pyext/probe/kernels_reference.py: masked_batch with -1
words, every kind of invalid row (padding + error word), with and without the validation pass,
length 0; segment_distance with both metrics, all dtypes, the 16-byte vector path and the
strided / misaligned scalar path, D = 0 / 1 / 768, K = 0, empty segments, zero rows and
out-of-range indices (skipped, error word set).  Needs g++ (C++20) and the CUDA headers, not a
GPU; skipped without them.
"""

from __future__ import annotations

from helpers import run_cuda_emulator


def test_probe_cuda_kernels_under_host_emulation(tmp_path):
    run_cuda_emulator("probe_kernels_emu", tmp_path, min_pass=66)
