"""Perturbed masking (Wu et al., ACL 2020): syntax read out of a BERT-like encoder with no training.

- impact matrices: :func:`impact_matrix`, :func:`impact_matrices` (batched engine),
  :func:`impact_matrix_reference` (one forward per pair) and the published batching scheme;
- parsers: :func:`eisner` (C++ op), :func:`chu_liu_edmonds`, :func:`mart`, the right-chain and
  right-branching baselines, :func:`parse_dependency` (the paper's score transform and root);
- unsupervised segmentation: :func:`segment`;
- evaluation: :func:`evaluate_dependency` (UAS/UUAS on a CoNLL-U treebank),
  :func:`evaluate_segmentation` (boundary P/R/F1), :func:`read_conllu`, :func:`pud_path` (the bundled UD English-PUD);
- the fused device ops the engine runs on: :mod:`kexue.probe.kernels`.

Example::

    >>> import kexue.probe as kp
    >>> model, tok = kp.default_model()                       # doctest: +SKIP
    >>> M = kp.impact_matrix(model, tok, "The cat sat .")     # doctest: +SKIP
    >>> kp.parse_dependency(M, "eisner")                      # doctest: +SKIP
"""

from . import conllu, kernels, metrics, parsers
from .conllu import Sentence, read_conllu
from .data import pud_path
from .engine import count_sequences, impact_matrices, impact_matrix, pair_impacts
from .evaluate import evaluate_dependency, evaluate_segmentation
from .metrics import segmentation_prf, uas, uuas
from .models import default_model, load_model
from .parsers import (
    chu_liu_edmonds,
    eisner,
    left_branching,
    left_chain,
    mart,
    parse_dependency,
    right_branching,
    right_chain,
    tree_brackets,
)
from .reference import impact_matrix_published_scheme, impact_matrix_reference
from .segment import segment

__all__ = [
    "Sentence",
    "chu_liu_edmonds",
    "conllu",
    "count_sequences",
    "default_model",
    "eisner",
    "evaluate_dependency",
    "evaluate_segmentation",
    "impact_matrices",
    "impact_matrix",
    "impact_matrix_published_scheme",
    "impact_matrix_reference",
    "kernels",
    "left_branching",
    "left_chain",
    "load_model",
    "mart",
    "metrics",
    "pair_impacts",
    "pud_path",
    "parse_dependency",
    "parsers",
    "read_conllu",
    "right_branching",
    "right_chain",
    "segment",
    "segmentation_prf",
    "tree_brackets",
    "uas",
    "uuas",
]
