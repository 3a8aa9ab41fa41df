"""Decoding that always stops: consistent top-k / nucleus sampling (fused op), HF warpers, a
model-agnostic decoder with termination statistics.  Semantics: :mod:`kexue.decoding.reference`."""

from .api import sample, sampling_probs
from .generate import GenerateOutput, generate, non_termination_ratio
from .reference import sample_reference, sampling_probs_reference

__all__ = [
    "ConsistentTopKLogitsWarper",
    "ConsistentTopPLogitsWarper",
    "GenerateOutput",
    "generate",
    "non_termination_ratio",
    "sample",
    "sample_reference",
    "sampling_probs",
    "sampling_probs_reference",
]


def __getattr__(name):  # the warpers import transformers: only when asked for
    if name in ("ConsistentTopKLogitsWarper", "ConsistentTopPLogitsWarper"):
        from . import warpers

        return getattr(warpers, name)
    raise AttributeError(f"module 'kexue.decoding' has no attribute {name!r}")
