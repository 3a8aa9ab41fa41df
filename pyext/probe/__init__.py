"""Perturbed masking (Wu et al., ACL 2020): syntax read out of a BERT-like encoder with no training.

Impact matrices (:func:`impact_matrix`, :func:`impact_matrices`), parsers that turn them into
trees, unsupervised segmentation, and evaluation against treebanks.
"""

from .engine import count_sequences, impact_matrices, impact_matrix, pair_impacts
from .models import default_model, load_model
from .reference import impact_matrix_published_scheme, impact_matrix_reference

__all__ = [
    "count_sequences",
    "default_model",
    "impact_matrices",
    "impact_matrix",
    "impact_matrix_published_scheme",
    "impact_matrix_reference",
    "load_model",
    "pair_impacts",
]
