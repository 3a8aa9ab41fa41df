"""Modules built on kexue ops."""

from .cross_entropy import CrossEntropyLoss
from .linear_attention import LinearAttention

__all__ = ["CrossEntropyLoss", "LinearAttention"]
from .self_terminating import SelfTerminatingHead  # noqa: E402

__all__ += ["SelfTerminatingHead"]
