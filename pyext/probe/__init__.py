"""Perturbed masking (Wu et al., ACL 2020): parameter-free probing of pretrained encoders.

Parsers (:mod:`kexue.probe.parsers`), CoNLL-U reading (:mod:`kexue.probe.conllu`) and scores
(:mod:`kexue.probe.metrics`).
"""

from . import conllu, metrics, parsers

__all__ = ["conllu", "metrics", "parsers"]
