"""torch.library glue of the sampling kernels: fake kernels (the schemas are in csrc/registration.cpp).

``kexue::sample`` returns (B,) int64 tokens, ``kexue::sampling_probs`` the (B, V) distribution in
the accumulation dtype. Neither is differentiable (sampling has no gradient; the probabilities
of a differentiable pipeline come from :func:`kexue.decoding.reference.sampling_probs_reference`).
The "triton" backend registers ops with the same signatures in kexue/triton_kernels/sampling.py.
"""

from __future__ import annotations

import torch

from .. import _ext  # noqa: F401  (loads the schemas)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_probs(logits, temperature, top_k, top_p, keep):
    return logits.new_empty(logits.shape, dtype=accumulation_dtype(logits.dtype))


def _fake_sample(logits, temperature, top_k, top_p, keep, uniform):
    return logits.new_empty((logits.shape[0],), dtype=torch.int64)


def schemas_loaded() -> bool:
    """False with a kexue._C built before these ops existed: then only the reference backend runs
    (``import kexue`` must not fail on a stale build; rebuild to get the kernels)."""
    try:
        torch._C._dispatch_has_kernel_for_dispatch_key("kexue::sample", "CPU")
        return True
    except RuntimeError:
        return False


if schemas_loaded():
    torch.library.register_fake("kexue::sampling_probs")(_fake_probs)
    torch.library.register_fake("kexue::sample")(_fake_sample)


def native_sample(logits, temperature, top_k, top_p, keep, uniform):
    """The "cpu" / "cuda" backends: tokens from the registered kernels of logits' device."""
    return torch.ops.kexue.sample(logits, temperature, top_k, top_p, keep, uniform)


def native_probs(logits, temperature, top_k, top_p, keep):
    return torch.ops.kexue.sampling_probs(logits, temperature, top_k, top_p, keep)
