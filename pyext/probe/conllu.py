"""A small CoNLL-U reader (no dependency on the ``conllu`` package).

Format (universaldependencies.org/format.html): sentences are blocks of lines separated by a
blank line; ``#`` lines are comments (``# sent_id = ...``, ``# text = ...``); each word line has
10 tab-separated fields ``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``.

What is kept: the syntactic *words* (integer IDs ``1..W``), which are the units of the
dependency tree and of the probe.  Multiword-token lines (ID a range, e.g. ``3-4`` for
"don't" = "do" + "n't") are not words: their surface form is kept in
:attr:`Sentence.multiword_tokens`, their component words are read as usual.  Empty nodes
(decimal IDs such as ``5.1``, enhanced graphs only) are skipped.  The published
perturbed-masking code reads every line as a token; its PUD copy has no multiword tokens or
empty nodes, so reading the words only is the same protocol there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["Sentence", "parse_conllu", "read_conllu"]


@dataclass
class Sentence:
    """One CoNLL-U sentence (its syntactic words).

    Attributes:
        words: FORM of each word (word ``i`` has CoNLL-U ID ``i + 1``).
        heads: HEAD of each word, 1-based, 0 = root.
        upos: UPOS tags.
        deprel: DEPREL labels.
        id: the ``# sent_id =`` comment, or None.
        text: the ``# text =`` comment, or None.
        space_after: False where MISC has ``SpaceAfter=No``; inside a multiword token False for
            all words but the last, which takes the token's MISC.
        multiword_tokens: ``(first, last, form)`` of each multiword token (1-based word IDs).
        comments: every comment line, without the leading ``#`` and surrounding spaces.
    """

    words: list[str]
    heads: list[int]
    upos: list[str]
    deprel: list[str]
    id: str | None = None
    text: str | None = None
    space_after: list[bool] = field(default_factory=list)
    multiword_tokens: list[tuple[int, int, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.words)

    def surface_tokens(self) -> list[str]:
        """The surface tokens: each multiword token's form replaces its words.

        Example:
            >>> s = Sentence(["I", "do", "n't"], [0, 1, 2], ["X"] * 3, ["x"] * 3,
            ...              multiword_tokens=[(2, 3, "don't")])
            >>> s.surface_tokens()
            ['I', "don't"]
        """
        starts = {a: (b, form) for a, b, form in self.multiword_tokens}
        out, i = [], 1
        while i <= len(self.words):
            if i in starts:
                b, form = starts[i]
                out.append(form)
                i = b + 1
            else:
                out.append(self.words[i - 1])
                i += 1
        return out


def _finish(block: dict, where: str) -> Sentence:
    words = block["words"]
    n = len(words)
    for i, h in enumerate(block["heads"]):
        if not 0 <= h <= n:
            raise ValueError(f"{where}: word {i + 1} has HEAD {h}, outside [0, {n}]")
    space_after = block["space_after"]
    for first, last, _form, sa in block["mwt_space"]:
        if not 1 <= first <= last <= n:
            raise ValueError(f"{where}: multiword token {first}-{last} is outside the words 1..{n}")
        for w in range(first, last):
            space_after[w - 1] = False
        space_after[last - 1] = sa
    return Sentence(words=words, heads=block["heads"], upos=block["upos"], deprel=block["deprel"],
                    id=block["id"], text=block["text"], space_after=space_after,
                    multiword_tokens=[(a, b, f) for a, b, f, _ in block["mwt_space"]],
                    comments=block["comments"])


def _new_block() -> dict:
    return {"words": [], "heads": [], "upos": [], "deprel": [], "id": None, "text": None,
            "space_after": [], "mwt_space": [], "comments": []}


def parse_conllu(text: str, source: str = "<string>") -> list[Sentence]:
    """Parses CoNLL-U text into sentences (see the module docstring for what is kept).

    Lines end with LF only (a CR before it is dropped); a leading byte-order mark is skipped.
    Errors (``ValueError`` naming ``source`` and the line): a word line without 10 fields, word
    IDs not ``1, 2, ...`` in order, a HEAD that is not an integer in ``[0, W]``.

    Example:
        >>> s = parse_conllu("# text = It's ok\\n1-2\\tIt's\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\t_\\n"
        ...                  "1\\tIt\\tit\\tPRON\\t_\\t_\\t3\\tnsubj\\t_\\t_\\n"
        ...                  "2\\t's\\tbe\\tAUX\\t_\\t_\\t3\\tcop\\t_\\t_\\n"
        ...                  "3\\tok\\tok\\tADJ\\t_\\t_\\t0\\troot\\t_\\t_\\n\\n")[0]
        >>> s.words, s.heads, s.text, s.multiword_tokens
        (['It', "'s", 'ok'], [3, 3, 0], "It's ok", [(1, 2, "It's")])
    """
    sentences: list[Sentence] = []
    block = _new_block()
    start_line = 1
    has_content = False
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark is allowed before the first line
        text = text[1:]
    # only LF ends a line (UD's format; a CR before it is tolerated): str.splitlines would also
    # split on U+2028, U+0085, form feeds, ..., which may occur inside a FORM or MISC field
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, raw in enumerate(lines, start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        where = f"{source}:{lineno}"
        if not line.strip():
            if has_content:
                if block["words"]:
                    sentences.append(_finish(block, f"{source}:{start_line}"))
                block, has_content = _new_block(), False
            continue
        if not has_content:
            start_line, has_content = lineno, True
        if line.startswith("#"):
            body = line[1:].strip()
            block["comments"].append(body)
            key, sep, value = body.partition("=")
            if sep:
                key = key.strip()
                if key == "text":
                    block["text"] = value.strip()
                elif key == "sent_id":
                    block["id"] = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ValueError(f"{where}: a CoNLL-U word line has 10 tab-separated fields, got {len(cols)}: {line!r}")
        tid, form, _lemma, upos, _xpos, _feats, head, deprel, _deps, misc = cols
        no_space = "SpaceAfter=No" in misc.split("|")
        if "-" in tid:  # multiword token
            a, _, b = tid.partition("-")
            try:
                first, last = int(a), int(b)
            except ValueError:
                raise ValueError(f"{where}: bad multiword-token ID {tid!r}") from None
            block["mwt_space"].append((first, last, form, not no_space))
            continue
        if "." in tid:  # empty node
            continue
        try:
            idx = int(tid)
        except ValueError:
            raise ValueError(f"{where}: bad word ID {tid!r}") from None
        if idx != len(block["words"]) + 1:
            raise ValueError(f"{where}: word ID {idx} out of order (expected {len(block['words']) + 1})")
        try:
            h = int(head)
        except ValueError:
            raise ValueError(f"{where}: HEAD must be an integer, got {head!r}") from None
        block["words"].append(form)
        block["heads"].append(h)
        block["upos"].append(upos)
        block["deprel"].append(deprel)
        block["space_after"].append(not no_space)
    if has_content and block["words"]:
        sentences.append(_finish(block, f"{source}:{start_line}"))
    return sentences


def read_conllu(path: str | os.PathLike) -> list[Sentence]:
    """Reads a CoNLL-U file (UTF-8, a byte-order mark allowed) into a list of :class:`Sentence`.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.conllu")
        >>> _ = open(p, "w").write("1\\tHi\\thi\\tINTJ\\t_\\t_\\t0\\troot\\t_\\t_\\n\\n")
        >>> [s.words for s in read_conllu(p)]
        [['Hi']]
    """
    with open(path, encoding="utf-8", newline="") as f:  # newline="": no newline translation
        return parse_conllu(f.read(), source=os.fspath(path))
