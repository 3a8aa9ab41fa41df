"""kexue: fast, exact kernels (CPU C++, Triton, CUDA) behind plain PyTorch APIs.

Every op has a plain-PyTorch reference (``backend="torch"``) that defines its semantics, and
fast backends chosen with ``backend="auto"``.
"""

from . import _ext  # noqa: F401  (loads kexue._C: op schemas and CPU kernels)
from ._ext import empty_cpu_cache
from ._info import build_info
from .cross_entropy import adjust_logits, class_prior, cross_entropy, linear_cross_entropy
from .decoding import sample
from .linear_attention import linear_attention, linear_attention_step

__version__ = "0.1.0"

__all__ = [
    "adjust_logits",
    "build_info",
    "class_prior",
    "cross_entropy",
    "decoding",
    "empty_cpu_cache",
    "linear_attention",
    "linear_attention_step",
    "linear_cross_entropy",
    "nn",
    "sample",
]


_LAZY_SUBMODULES = ("nn", "integrations", "datasets", "vae", "theseus", "text_classifier", "attribution")


def __getattr__(name):  # lazy submodules keep `import kexue` light
    if name in _LAZY_SUBMODULES:  # import_module: `from . import nn` would recurse here
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'kexue' has no attribute {name!r}")
