"""The CUDA sampling kernel (csrc/sampling/sampling_kernels.cu) under host emulation, against a
float64 reference written from pyext/decoding/reference.py (tests/cuda_emulation/sampling_kernels_emu.cpp)."""

from helpers import run_cuda_emulator


def test_sampling_cuda_kernel_under_host_emulation(tmp_path):
    run_cuda_emulator("sampling_kernels_emu", tmp_path, min_pass=32)
