"""Small runs of every CUDA kernel of kexue, for compute-sanitizer (memcheck, racecheck) on a GPU.

Linear attention: forward and backward of the chunk kernels (causal and not, three feature maps,
masks, initial state, odd sizes, float32 and bfloat16) and the decoding step.  Cross-entropy:
3 dtypes × options × contiguous / misaligned / strided rows × in place, ignored and out-of-range
targets, row groups from C=5 to C=70001.  Probe: the engine on one sentence (masked batches,
segment distances) with a model of MiniLM's shape.  Seconds natively; sanitizers slow it 10-100x.

    compute-sanitizer --tool memcheck python bench/gpu_small_runs.py --model .gpu/minilm-shape
"""

from __future__ import annotations

import argparse

import torch

import kexue

DEV = "cuda"


def linear_attention() -> None:
    for dtype in (torch.float32, torch.bfloat16):
        for causal in (False, True):
            for fm, D in (("elu", 20), ("taylor", 130), ("softmax", 64)):
                q, k, v = (torch.randn(1, 2, 70, D, device=DEV, dtype=dtype, requires_grad=True) for _ in range(3))
                F = D + (fm == "taylor")
                S0 = torch.randn(1, 2, F, D, device=DEV, requires_grad=True)
                z0 = torch.rand(1, 2, F, device=DEV, requires_grad=True)
                m = torch.rand(1, 70, device=DEV) < 0.2
                o, (S, z) = kexue.linear_attention(q, k, v, causal=causal, feature_map=fm, key_padding_mask=m,
                                                   initial_state=(S0, z0), return_state=True, backend="cuda")
                (o.float().sum() + S.sum() + z.sum()).backward()
        q = torch.randn(2, 4, 1, 32, device=DEV, dtype=dtype)
        _, st = kexue.linear_attention(q, q, q, causal=True, return_state=True, backend="cuda")
        kexue.linear_attention_step(q[:, :, 0], q[:, :, 0], q[:, :, 0], st, backend="cuda")
    torch.cuda.synchronize()
    print("linear attention: small runs ok")


def cross_entropy() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for N, C in ((6, 5), (9, 3001), (3, 20011), (2, 70001)):
            for layout in ("contig", "offset", "strided"):
                for prior, eps, weight, inplace in ((False, 0.0, False, False), (True, 0.1, True, True),
                                                    (True, 0.0, True, False), (False, 0.2, False, True)):
                    if layout == "strided":
                        base = torch.randn(2 * C, N, device=DEV, dtype=dtype).t()[:, ::2]
                    elif layout == "offset":
                        base = torch.randn(N, C + 1, device=DEV, dtype=dtype)[:, 1:]
                    else:
                        base = torch.randn(N, C, device=DEV, dtype=dtype)
                    x = base.detach().clone().requires_grad_()
                    t = torch.randint(0, C, (N,), device=DEV)
                    t[0] = -100
                    if N > 2:
                        t[1] = C  # out of range: NaN row, error word set, no sync
                    kw = dict(prior=torch.rand(C, device=DEV) + 0.1 if prior else None, label_smoothing=eps,
                              weight=torch.rand(C, device=DEV) + 0.5 if weight else None, z_loss=1e-4,
                              reduction="none")
                    h = x * 1.0 if inplace else x
                    loss = kexue.cross_entropy(h, t, backend="cuda", inplace_backward=inplace, **kw)
                    torch.autograd.grad(loss[torch.arange(N, device=DEV) != 1].sum(), x)
    torch.cuda.synchronize()
    print("cross-entropy: small runs ok")


def probe(model_dir: str | None) -> None:
    import kexue.probe as kp

    model, tok = kp.load_model(model_dir, device=DEV, random_weights=model_dir is not None)
    words = "Unbelievably , the quick brown fox jumped over the lazy dogs .".split()
    M = kp.impact_matrix(model, tok, words, backend="cuda")
    torch.cuda.synchronize()
    R = kp.impact_matrix_reference(model, tok, words)
    print(f"probe: small run ok, max |M - reference| = {float((M.double() - R.double().cpu()).abs().max()):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="folder with MiniLM's config + tokenizer (random weights)")
    ap.add_argument("--ops", default="la,ce,probe")
    a = ap.parse_args()
    ops = a.ops.split(",")
    if "la" in ops:
        linear_attention()
    if "ce" in ops:
        cross_entropy()
    if "probe" in ops:
        probe(a.model)


if __name__ == "__main__":
    main()
