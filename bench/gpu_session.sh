#!/usr/bin/env bash
# Commands for the first session with a GPU (H100) to verify the CUDA linear-attention backend.
# Run from the repository root:  bash bench/gpu_session.sh 2>&1 | tee gpu_session.log
# Nothing here has been run yet: the kernels were written and compiled on a machine without a GPU.
set -euo pipefail
PY=${PYTHON:-python}

# 0. The nvcc compile check (sm_80 + sm_90, warnings as errors, ptxas spill report).
CUDAFLAGS="-Xptxas=-v" make cuda-check JOBS=${MAX_JOBS:-8} 2>&1 | grep -E "error|spill|Used" | sort | uniq -c | sort -rn | head -20

# 1. Build kexue._C and kexue._C_cuda for the H100 only (fast); check the CUDA library loads.
TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-8} $PY -m pip install --no-build-isolation --no-deps -e . -q
$PY -c "import kexue, kexue._ext as e; print('cuda lib error:', e.CUDA_LIBRARY_ERROR); \
print('CUDA kernel registered:', e.has_kernel('linear_attention_fwd', 'CUDA'), e.has_kernel('linear_attention_bwd', 'CUDA'))"

# 2. The test-suite (collects the "cuda" device cases now that a GPU is present).
$PY -m pytest tests -q -x -k "linear_attention and cuda" 2>&1 | tail -20
$PY -m pytest tests -q 2>&1 | tail -5

# 3. Memory and race checks, small sizes, every kernel (fwd chunk, step, prep/dq/dk/dv, vjp).
cat > /tmp/la_small.py <<'PYEOF'
import torch, kexue
for dtype in (torch.float32, torch.bfloat16):
    for causal in (False, True):
        for fm, D in (("elu", 20), ("taylor", 130), ("softmax", 64)):
            q, k, v = (torch.randn(1, 2, 70, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            S0 = torch.randn(1, 2, D + (fm == "taylor"), D, device="cuda", requires_grad=True)
            z0 = torch.rand(1, 2, D + (fm == "taylor"), device="cuda", requires_grad=True)
            m = torch.rand(1, 70, device="cuda") < 0.2
            o, (S, z) = kexue.linear_attention(q, k, v, causal=causal, feature_map=fm, key_padding_mask=m,
                                               initial_state=(S0, z0), return_state=True, backend="cuda")
            (o.float().sum() + S.sum() + z.sum()).backward()
        o, st = kexue.linear_attention_step(q[:, :, 0].detach(), k[:, :, 0].detach(), v[:, :, 0].detach(), None,
                                            backend="cuda")
torch.cuda.synchronize()
print("small run ok")
PYEOF
compute-sanitizer --tool memcheck --error-exitcode 1 $PY /tmp/la_small.py
compute-sanitizer --tool racecheck --racecheck-report all --error-exitcode 1 $PY /tmp/la_small.py
compute-sanitizer --tool initcheck --error-exitcode 1 $PY /tmp/la_small.py || echo "initcheck reported (read the log)"
compute-sanitizer --tool synccheck --error-exitcode 1 $PY /tmp/la_small.py

# 4. Correctness table against the float64 definition, then timings (torch / cuda / triton / fla).
$PY bench/gpu_check_linear_attention.py
