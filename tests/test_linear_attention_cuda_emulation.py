"""The CUDA linear-attention kernels run on the CPU: tests/cuda_emulation/la_kernels_emu.cpp
compiles the real launchers (csrc/linear_attention/linear_attention_api.cu) and every kernel
they launch (the chunked kernels, float32 CUDA-core and 16-bit tensor-core (WMMA, emulated),
in their forward, prep, dq, dk and dv roles, the decoding step, the vjp pass) with g++ on the
CUDA stand-ins of tests/cuda_emulation/cuda_host_emu.h, and checks out, the final state, dq, dk,
dv and the initial state's gradient against a float64 reference written from the definition
(its gradients checked by central differences) on 107 cases (16-bit ones on both kernels): all
feature maps, causal or not, normalised or not, masks, initial state, gradients of the final
state, GQA, Dk != Dv, N = 0 / 1 / around the chunk sizes, D from 1 to 256, the tile-config
boundaries, float32 / float16 / bfloat16, strided inputs and outputs, int32 / int64 cu_seqlens
with empty sequences, float16 inputs whose P tiles, state and g' rows leave float16's range
unless the tensor-core kernel scales them, and float16 features below 2^-14 (a peaked softmax:
exact only with the φ rows scaled too); then 8 checks on a device that lets a block opt into
99 KiB of shared memory (sm_86 / sm_89): 16-bit inputs at D = 128 run (on the float32 kernel's
smaller tiles) and match, larger head dims are refused before any launch, with a reason.  Needs
g++ (C++20) and the CUDA headers, not a GPU; skipped without them.
The GPU itself (memory model, speed) is covered by the GPU check scripts in bench/.
"""

from __future__ import annotations

from helpers import run_cuda_emulator


def test_linear_attention_cuda_kernels_under_host_emulation(tmp_path):
    run_cuda_emulator("la_kernels_emu", tmp_path, min_pass=115)
