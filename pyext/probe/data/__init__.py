"""Data shipped with kexue.probe: UD English-PUD (CC BY-SA 3.0, see ud-english-pud/LICENSE.txt),
the 1000-sentence treebank of the probe's evaluation, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

PUD_PATH = Path(__file__).resolve().parent / "ud-english-pud" / "en_pud-ud-test.conllu"


def pud_path() -> Path:
    """Path of the bundled UD English-PUD test set (CoNLL-U, 1000 sentences)."""
    if not PUD_PATH.exists():
        raise FileNotFoundError(f"UD English-PUD is missing from the installation ({PUD_PATH})")
    return PUD_PATH
