"""torch.library glue of the sampling kernels: fake kernels (the schemas are in csrc/registration.cpp).

``kexue::sample`` returns (B,) int64 tokens (not differentiable: a draw has no gradient);
``kexue::sampling_probs`` the (B, V) distribution q in the accumulation dtype, differentiable in
the logits: q = w / Σw with w_i = exp(x_i / T) on the kept set K and 0 elsewhere, and K is a
piecewise-constant function of the logits (its boundaries have measure zero), so
∂L/∂x = q ⊙ (g − ⟨q, g⟩) / T for g = ∂L/∂q (0 off K; O(B·V), no sort).  Double backward and
torch.func run the reference (:mod:`kexue._autograd`).  The "triton" backend registers ops with
the same signatures in kexue/triton_kernels/sampling.py and calls :func:`register_probs_autograd`.
"""

from __future__ import annotations

import torch

from .. import _ext  # noqa: F401  (loads the schemas)
from .._autograd import needs_differentiable_backward, reference_vjp, register_functorch_reference
from .._validate import meta_check, meta_dtype, meta_float, meta_shape
from .reference import sampling_probs_reference


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_meta(op, logits, temperature, top_k, top_p, keep, uniform=None):
    """What the eager kernels check without reading data (csrc/sampling)."""
    meta_check(logits.dim() == 2, op, f"logits must have shape (B, V), got {tuple(logits.shape)}")
    meta_float(op, "logits", logits)
    B, V = logits.shape
    meta_check(V >= 1, op, "logits must have at least one token (V >= 1)")
    for name, t, dtype in (("temperature", temperature, torch.float64), ("top_k", top_k, torch.int64),
                           ("top_p", top_p, torch.float64), ("uniform", uniform, torch.float64)):
        meta_shape(op, name, t, (B,), f"(B,) = ({B},)")
        meta_dtype(op, name, t, (dtype,), str(dtype).replace("torch.", ""))
    meta_check(keep.dim() == 2 and keep.shape[0] == B and keep.dtype == torch.int64, op,
               f"keep must be an int64 tensor of shape (B, K), got {tuple(keep.shape)} {keep.dtype}")


def _fake_probs(logits, temperature, top_k, top_p, keep):
    check_meta("sampling_probs", logits, temperature, top_k, top_p, keep)
    return logits.new_empty(logits.shape, dtype=accumulation_dtype(logits.dtype))


def _fake_sample(logits, temperature, top_k, top_p, keep, uniform):
    check_meta("sample", logits, temperature, top_k, top_p, keep, uniform)
    return logits.new_empty((logits.shape[0],), dtype=torch.int64)


def schemas_loaded() -> bool:
    """False with a kexue._C built before these ops existed: then only the reference backend runs
    (``import kexue`` must not fail on a stale build; rebuild to get the kernels)."""
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key("kexue::sample", "CPU")
        return True
    except RuntimeError:
        return False


def register_probs_autograd(name: str, out_dtype=accumulation_dtype) -> None:
    """Autograd and the torch.func route of an op with the sampling_probs signature
    (``out_dtype(logits.dtype)``: the dtype of its output)."""

    def reference(logits, temperature, top_k, top_p, keep):
        return sampling_probs_reference(logits, temperature, top_k, top_p, keep, dtype=out_dtype(logits.dtype))

    def setup_context(ctx, inputs, output):
        logits, temperature, top_k, top_p, keep = inputs
        ctx.save_for_backward(logits, temperature, top_k, top_p, keep, output)

    def backward(ctx, grad):
        logits, temperature, top_k, top_p, keep, q = ctx.saved_tensors
        if needs_differentiable_backward():
            g = reference_vjp(lambda x: (reference(x, temperature, top_k, top_p, keep),), (logits,), (True,),
                              (grad,))[0]
        else:
            g = grad.to(q.dtype)
            # (the division in float64: a temperature below float32's range is not a 0 there)
            g = (q * (g - (q * g).sum(dim=1, keepdim=True))).double() / temperature.double()[:, None]
        return g.to(logits.dtype), None, None, None, None

    torch.library.register_autograd(name, backward, setup_context=setup_context)
    register_functorch_reference(name, reference)


if schemas_loaded():
    torch.library.register_fake("kexue::sampling_probs")(_fake_probs)
    torch.library.register_fake("kexue::sample")(_fake_sample)
    register_probs_autograd("kexue::sampling_probs")


def native_sample(logits, temperature, top_k, top_p, keep, uniform):
    """The "cpu" / "cuda" backends: tokens from the registered kernels of logits' device."""
    return torch.ops.kexue.sample(logits, temperature, top_k, top_p, keep, uniform)


def native_probs(logits, temperature, top_k, top_p, keep):
    return torch.ops.kexue.sampling_probs(logits, temperature, top_k, top_p, keep)
