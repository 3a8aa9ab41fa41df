"""Modules built on kexue ops."""

from .cross_entropy import CrossEntropyLoss
from .linear_attention import LinearAttention

__all__ = ["CrossEntropyLoss", "LinearAttention"]
