"""kexue loads with its CUDA library and every op has a CUDA kernel registered (exit status 1
otherwise); with --launch, one linear-attention call also runs on the GPU.  Used by
gpu_prepare.sh (after the build, no GPU needed) and gpu_session.sh (before the stages)."""

from __future__ import annotations

import argparse

import torch

import kexue
import kexue._ext as e

CUDA_OPS = ["linear_attention_fwd", "linear_attention_bwd", "cross_entropy_fwd", "cross_entropy_bwd",
            "cross_entropy_bwd_inplace", "probe_masked_batch", "probe_segment_distance"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--launch", action="store_true", help="also run a linear-attention call on the GPU")
    a = ap.parse_args()
    assert e.CUDA_LIBRARY_ERROR is None, e.CUDA_LIBRARY_ERROR
    missing = [o for o in CUDA_OPS if not e.has_kernel(o, "CUDA")]
    assert not missing, f"no CUDA kernel registered for {missing}"
    msg = f"kexue {kexue.__file__}, torch {torch.__version__}: CUDA kernels registered for {len(CUDA_OPS)} ops"
    if a.launch:
        x = torch.randn(2, 2, 5, 8, device="cuda")
        kexue.linear_attention(x, x, x, causal=True, backend="cuda")
        torch.cuda.synchronize()
        msg += ", one launched"
    print(msg)


if __name__ == "__main__":
    main()
