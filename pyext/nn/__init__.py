"""Modules built on kexue ops."""

from .linear_attention import LinearAttention

__all__ = ["LinearAttention"]
