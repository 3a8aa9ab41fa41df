"""kexue.probe: perturbed masking (Wu et al., ACL 2020) for Hugging Face encoders.

Fused device ops of the engine: :mod:`kexue.probe.kernels` (masked batch construction and
per-segment distances; CPU C++, CUDA and Triton kernels with a plain-PyTorch reference).
"""

from . import kernels  # noqa: F401
