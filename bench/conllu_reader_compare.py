"""Issue 16's question: should kexue.probe read CoNLL-U with the `conllu` package (PyPI)?

Times both readers side by side on the bundled UD English-PUD (1000 sentences, 1.4 MB), checks
that they agree on words, heads, sent_id and text, and tries the inputs the UD format allows or
forbids (a byte-order mark, U+2028 inside a field, a word line with 9 fields).

    python bench/conllu_reader_compare.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import statistics

from kexue.benchmarking import time_in_turns
from kexue.probe import pud_path
from kexue.probe.conllu import parse_conllu

LINE = "1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n"
PROBES = {
    "byte-order mark (allowed)": "\ufeff" + LINE + "\n",
    "U+2028 inside FORM (one line)": LINE.replace("Hi", "H\u2028i") + "\n",
    "word line with 9 fields (invalid)": LINE.rsplit("\t", 1)[0] + "\n\n",
}


def _try(fn, text):
    try:
        out = fn(text)
        return f"read: {out}"
    except Exception as exc:  # noqa: BLE001  (reported, not handled)
        return f"error: {type(exc).__name__}: {str(exc)[:70]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="one timed round (smoke test)")
    args = ap.parse_args()
    import conllu

    text = open(pud_path(), encoding="utf-8").read()
    ours, theirs = parse_conllu(text), conllu.parse(text)
    agree = len(ours) == len(theirs) and all(
        a.words == [t["form"] for t in b if isinstance(t["id"], int)]
        and a.heads == [t["head"] for t in b if isinstance(t["id"], int)]
        and a.id == b.metadata.get("sent_id") and a.text == b.metadata.get("text")
        for a, b in zip(ours, theirs, strict=True))
    times = time_in_turns({"kexue": lambda: parse_conllu(text), "conllu": lambda: conllu.parse(text)},
                          repeats=1 if args.quick else args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{platform.machine()}, conllu {importlib.metadata.version('conllu')}")
    print(f"PUD: {len(ours)} sentences, readers agree on words/heads/sent_id/text: {agree}")
    print(f"median s over {len(times['kexue'])} rounds: kexue {med['kexue']:.3f}, conllu {med['conllu']:.3f} "
          f"({med['conllu'] / med['kexue']:.1f}x)")
    for name, probe in PROBES.items():
        print(f"{name}:\n  kexue:  {_try(lambda t: [s.words for s in parse_conllu(t)], probe)}"
              f"\n  conllu: {_try(lambda t: [[tok['form'] for tok in s] for s in conllu.parse(t)], probe)}")


if __name__ == "__main__":
    main()
