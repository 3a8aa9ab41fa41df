"""Jane Austen's six completed novels, split by chapter into train / valid / test sentences.

Source: the Debian package ``r-cran-janeaustenr`` (janeaustenr 1.0.0 by Julia Silge, CRAN), fetched
with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (never installed: that would pull in R).
The texts are R character vectors (one element per line of the Project Gutenberg edition) in the
package's lazy-load database ``data/Rdata.rdb`` with its index ``data/Rdata.rdx``: the index is a
gzip-compressed RDS file mapping each novel to (offset, length) in the .rdb, where each entry is a
4-byte big-endian size followed by a zlib stream of a serialised R object.  Both are read with the
``rdata`` package (extras ``decoding-study``; it needs pandas and xarray).

Licence: janeaustenr is under the MIT License (Copyright 2016-2017 Julia Silge; Debian packaging
2021 Andreas Tille, MIT: ``/usr/share/doc/r-cran-janeaustenr/copyright``).  The novels themselves
(1811-1818) are in the public domain.

Preparation (fixed, no randomness): the text before the first chapter heading (title pages,
Northanger Abbey's advertisement) and the headings ("CHAPTER I", "VOLUME II", "Chapter 12") are
dropped; Gutenberg's ``_italics_`` marks are removed; blank lines separate paragraphs; paragraphs
are split into sentences after ``.``, ``!`` or ``?`` (with any closing quotes) before a capital or
an opening quote, except after Mr, Mrs, Dr, St.  **Split by chapter**: within each novel, chapter
k (0-based, counted across volumes) goes to valid when k % 10 == 8, to test when k % 10 == 9,
else to train (about 80 / 10 / 10 %, every novel in every split, no chapter shared).

Example::

    >>> from kexue.datasets import austen_novels
    >>> data = austen_novels()                                      # doctest: +SKIP
    >>> {k: len(v) for k, v in data.items()}                        # doctest: +SKIP
    {'train': ..., 'valid': ..., 'test': ...}
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from pathlib import Path

from ._fetch import debian_package

DEBIAN_PACKAGE = "r-cran-janeaustenr"
NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
SPLITS = ("train", "valid", "test")

_HEADING = re.compile(r"^\s*(chapter|volume)\s+[0-9ivxlc]+\.?\s*$", re.IGNORECASE)
_END = re.compile(r"^\s*(the end|finis)\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"""(?<!\bMr\.)(?<!\bMrs\.)(?<!\bDr\.)(?<!\bSt\.)(?<=[.!?])(["')\]]*)\s+(?=["'(\[]?[A-Z])""")


def rdata_dir() -> Path:
    """The unpacked package's ``data/`` folder (``Rdata.rdb``, ``Rdata.rdx``), fetched once."""
    root = debian_package(DEBIAN_PACKAGE)
    (data,) = list(root.glob("usr/lib/R/site-library/janeaustenr/data"))
    return data


def read_lazyload_db(data: Path, stem: str = "Rdata") -> dict[str, list[str]]:
    """Every object of an R lazy-load database (``stem.rdb`` + ``stem.rdx``) as a list of strings."""
    try:
        import rdata
    except ImportError as exc:  # pragma: no cover - only without the study extras
        raise ImportError("reading janeaustenr's R data needs the `rdata` package: "
                          "pip install --no-deps -r requirements/bench.txt") from exc
    # rdata warns that the .rdx (a gzip RDS file) has another extension and that the .rdb entries
    # (bare serialisations) have no file header: both are what a lazy-load database is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        index = rdata.conversion.convert(rdata.parser.parse_file(data / f"{stem}.rdx"))
        blob = (data / f"{stem}.rdb").read_bytes()
        out = {}
        for name, (offset, length) in index["variables"].items():
            entry = blob[int(offset): int(offset) + int(length)]
            (size,) = struct.unpack(">I", entry[:4])
            raw = zlib.decompress(entry[4:])
            if len(raw) != size:
                raise RuntimeError(f"{stem}.rdb entry {name!r}: {len(raw)} bytes unpacked, the header says {size}")
            out[str(name)] = [str(s) for s in rdata.conversion.convert(rdata.parser.parse_data(raw))]
    return out


def chapters(lines: list[str]) -> list[list[str]]:
    """The chapters of one novel, each a list of paragraphs (lines joined by spaces)."""
    result: list[list[str]] = []
    para: list[str] = []

    def flush():
        if para and result:
            result[-1].append(" ".join(para))
        para.clear()

    for line in lines:
        line = line.replace("_", "").strip()
        if _END.match(line):
            break
        if _HEADING.match(line):
            flush()
            if line.lower().startswith("chapter"):
                result.append([])
            continue
        if line:
            para.append(line)
        else:
            flush()
    flush()
    return result


def sentences(paragraph: str) -> list[str]:
    """A paragraph cut into sentences (see the module docstring for the rule)."""
    parts, start = [], 0
    for m in _SENTENCE_END.finditer(paragraph):
        parts.append(paragraph[start: m.end(1)].strip())
        start = m.end()
    parts.append(paragraph[start:].strip())
    return [p for p in parts if p]


def split_of(chapter_index: int) -> str:
    """The split of a novel's chapter ``chapter_index`` (0-based)."""
    return {8: "valid", 9: "test"}.get(chapter_index % 10, "train")


def austen_novels(unit: str = "sentence") -> dict[str, list[str]]:
    """{"train", "valid", "test"} → the sentences (``unit="sentence"``) or paragraphs (``"paragraph"``)
    of the six novels, in reading order, split by chapter (see the module docstring)."""
    if unit not in ("sentence", "paragraph"):
        raise ValueError(f"unit must be 'sentence' or 'paragraph', got {unit!r}")
    texts = read_lazyload_db(rdata_dir())
    missing = set(NOVELS) - set(texts)
    if missing:
        raise RuntimeError(f"janeaustenr's data lacks {sorted(missing)}")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for novel in NOVELS:
        for k, paragraphs in enumerate(chapters(texts[novel])):
            for p in paragraphs:
                out[split_of(k)].extend(sentences(p) if unit == "sentence" else [p])
    return out
