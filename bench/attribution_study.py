"""Integrated gradients on the fine-tuned MiniLM sentiment classifier: speed against Captum 0.9 and
fidelity against the plain gradient, gradient x input and random scores.

Speed (CPU float32, gausslegendre, [PAD] baseline, the first 64 test sentences):
  1. Captum ``LayerIntegratedGradients`` on ``bert.embeddings`` at n_steps = 50, with its best
     batching (one sentence per call, no padding; internal_batch_size tuned among a few values)
     vs kexue ``token_attributions`` at n_steps = 50: agreement and time, side by side in turns;
  2. at equal completeness error: each sentence's tol is the relative error Captum reached at 50
     steps, kexue runs ``n_steps="auto"`` with it: time, model evaluations, steps used;
  3. completeness error against n_steps for both;
  4. a profile of kexue's n = 50 run (where the time goes).
Fidelity (the test set): the deletion curve (drop the top-k% tokens by score, the predicted class's
probability; AOPC), comprehensiveness and sufficiency (ERASER, DeYoung et al. 2020) for IG, the
gradient (Σ_h and L2 norm), gradient x input and random scores (seeds 0..4).
Heatmaps: four test sentences, IG against the gradient.

``--quick``: 4 sentences, small step counts, 8 fidelity sentences, no timing repeats (a test runs it).
The machine is shared: timings are medians of runs taken in turns, reported as ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from kexue.attribution import render, token_attributions
from kexue.attribution.bench import captum_layer_ig, classifier
from kexue.benchmarking import time_in_turns
from kexue.datasets import movie_snippets

FIG = Path(__file__).resolve().parent / "figures"
SEEDS = (0, 1, 2, 3, 4)
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)  # deletion curve / ERASER bins (k% of the text's tokens)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def pick_sentences(texts: list[str], n: int) -> list[str]:
    return texts[:n]


def rel_completeness(r) -> float:
    return r.error / max(abs(r.f_input - r.f_baseline), 1e-12)


# ------------------------------------------------------------------------------------------------
# speed


def speed(model, tok, texts: list[str], repeats: int, quick: bool) -> dict:
    n = 4 if quick else 50
    # Captum's best batching: one sentence per call (no padding FLOPs); internal_batch_size tuned
    ibs_options = [None] if quick else [None, 25]
    tune = {}
    for ibs in ibs_options:
        t0 = time.perf_counter()
        captum_layer_ig(model, tok, texts[:2], n, ibs)
        tune[ibs] = time.perf_counter() - t0
    best_ibs = min(tune, key=tune.get)
    cap = captum_layer_ig(model, tok, texts, n, best_ibs)
    ours = token_attributions(model, tok, texts, n_steps=n)
    rel = [float((r.scores - c).abs().max() / c.abs().max()) for r, (c, _) in zip(ours, cap, strict=True)]
    cap_rel_err = [abs(d) / max(abs(r.f_input - r.f_baseline), 1e-12) for r, (_, d) in zip(ours, cap, strict=True)]
    tols = [max(e, 1e-7) for e in cap_rel_err]
    auto = token_attributions(model, tok, texts, n_steps="auto", tol=tols, max_steps=129)
    auto_ok = [rel_completeness(r) <= t for r, t in zip(auto, tols, strict=True)]
    steps = [r.steps for r in auto]
    fns = {
        "captum": lambda: captum_layer_ig(model, tok, texts, n, best_ibs),
        "kexue_n": lambda: token_attributions(model, tok, texts, n_steps=n),
        "kexue_n_autograd": lambda: token_attributions(model, tok, texts, n_steps=n, fast_path=False),
        "kexue_auto": lambda: token_attributions(model, tok, texts, n_steps="auto", tol=tols, max_steps=129),
    }
    times = time_in_turns(fns, repeats, warmup=0 if quick else 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (max(v) - min(v)) / med[k] for k, v in times.items()}
    return {"n": n, "tune": tune, "best_ibs": best_ibs, "rel_diff": rel, "captum_rel_err": cap_rel_err,
            "auto_steps": steps, "auto_ok": auto_ok, "auto_rel_err": [rel_completeness(r) for r in auto],
            "median_s": med, "spread": spread, "tokens": [len(r.tokens) for r in ours]}


def error_vs_steps(model, tok, texts: list[str], quick: bool) -> list[tuple]:
    rows = []
    for n in ((2, 4) if quick else (4, 8, 16, 32, 50)):
        cap = captum_layer_ig(model, tok, texts, n)
        ours = token_attributions(model, tok, texts, n_steps=n)
        e_c = [abs(d) / max(abs(r.f_input - r.f_baseline), 1e-12) for r, (_, d) in zip(ours, cap, strict=True)]
        rows.append(("captum GL", n, n, statistics.median(e_c), max(e_c)))
    for tol in ((1e-1,) if quick else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)):
        res = token_attributions(model, tok, texts, n_steps="auto", tol=tol, max_steps=129)
        e = [rel_completeness(r) for r in res]
        rows.append((f"kexue auto tol={tol:g}", statistics.mean(r.steps for r in res), max(r.steps for r in res),
                     statistics.median(e), max(e)))
    return rows


def romberg_weights(level: int) -> torch.Tensor:
    """The weights that Romberg's R_{level,level} gives to the 2^level + 1 equally spaced points (float64): the
    nested rule kexue's auto used before Clenshaw-Curtis, kept here for the comparison."""
    row: list[torch.Tensor] = []
    for k in range(level + 1):
        t = torch.zeros(2**level + 1, dtype=torch.float64)
        t[::2 ** (level - k)] = 1.0 / 2**k
        t[0] = t[-1] = 0.5 / 2**k
        new = [t]
        for m, prev in enumerate(row, start=1):
            new.append(new[-1] + (new[-1] - prev) / (4**m - 1))
        row = new
    return row[-1]


def path_integrand(model, tok, text: str):
    """(s, F) for one text on the hand-written BERT integrand (float32 model, [PAD] baseline, predicted class):
    s(alphas) = (e - e')·∇F at the points (float64, one per point) and F at the points."""
    from kexue.attribution import bert_fast
    from kexue.attribution import text as T

    e = T._encode(tok, text, None)
    ids, tt = torch.tensor([e.ids]), torch.tensor([e.token_type_ids])
    mask = torch.ones_like(ids)
    layer = model.bert.embeddings
    e_x = T._capture(model, layer, T._model_inputs(ids, mask, tt))
    e_b = T._capture(model, layer, T._model_inputs(torch.tensor([T._baseline_ids(tok, e, "pad")]), mask, tt))
    with torch.no_grad():
        tgt = model(**T._model_inputs(ids, mask, tt)).logits.argmax(-1)
    ig = bert_fast.BertClassifierIntegrand(model, e_x, e_b, tgt)
    de = (e_x - e_b).double()

    def s_and_f(alphas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (g,), f = ig(torch.zeros(len(alphas), dtype=torch.long), alphas)
        return (g.double() * de).flatten(1).sum(1), f.double().flatten()

    return s_and_f


def rules(model, tok, texts: list[str], quick: bool) -> list[tuple[str, int, float, float]]:
    """Relative completeness error |Σ_k w_k s(α_k) - (F(x) - F(x'))| / |F(x) - F(x')| of Gauss-Legendre
    (Captum's rule), Romberg (kexue's nested auto rule before) and Clenshaw-Curtis (nested, kexue's auto now) at
    equal point counts, s(α) = (x - x')·∇F on the same float32 integrand (the hand-written BERT one)."""
    from kexue.attribution.quadrature import level_points, level_weights, rule

    errs: dict[tuple[str, int], list[float]] = {}
    for t in texts:
        s_and_f = path_integrand(model, tok, t)
        ends = s_and_f(torch.tensor([1.0, 0.0], dtype=torch.float64))[1]
        df = float(ends[0]) - float(ends[1])
        gl = (4, 8) if quick else (8, 16, 24, 32, 50, 64)
        cands = [("Gauss-Legendre", n, *rule("gausslegendre", n)) for n in gl]
        for k in ((2, 3) if quick else (3, 4, 5, 6)):
            cands.append(("Romberg", 2**k + 1, torch.linspace(0, 1, 2**k + 1, dtype=torch.float64), romberg_weights(k)))
            cands.append(("Clenshaw-Curtis", 2**k + 1, level_points(k), level_weights(k)))
        for name, n, a, w in cands:
            errs.setdefault((name, n), []).append(abs(float((s_and_f(a)[0] * w).sum()) - df) / max(abs(df), 1e-12))
    return [(name, n, statistics.median(v), max(v)) for (name, n), v in sorted(errs.items(), key=lambda kv: kv[0][1])]


def profile(model, tok, texts: list[str], n: int) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        token_attributions(model, tok, texts, n_steps=n)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
    return [(e.key, e.self_cpu_time_total / total) for e in top]


# ------------------------------------------------------------------------------------------------
# fidelity


@torch.no_grad()
def probs(model, tok, id_lists: list[list[int]], target: int, batch: int = 64) -> torch.Tensor:
    out = []
    for s in range(0, len(id_lists), batch):
        chunk = id_lists[s:s + batch]
        L = max(len(x) for x in chunk)
        ids = torch.full((len(chunk), L), tok.pad_token_id)
        mask = torch.zeros(len(chunk), L, dtype=torch.long)
        for i, x in enumerate(chunk):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        out.append(torch.softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)[:, target])
    return torch.cat(out)


def faithfulness(model, tok, text: str, scores: torch.Tensor, target: int) -> dict:
    """Deletion AOPC, comprehensiveness, sufficiency of one text for one score vector (one per token)."""
    ids = tok(text)["input_ids"]
    inner = list(range(1, len(ids) - 1))  # [CLS] ... [SEP]: the specials stay
    order = sorted(inner, key=lambda i: -float(scores[i]))
    variants = []
    for f in FRACTIONS:
        k = max(1, round(f * len(inner)))
        top = set(order[:k])
        variants.append([t for i, t in enumerate(ids) if i not in top])  # top-k removed
        variants.append([t for i, t in enumerate(ids) if i in top or i in (0, len(ids) - 1)])  # only top-k
    p = probs(model, tok, [ids, *variants], target)
    p0, removed, kept = float(p[0]), p[1::2], p[2::2]
    return {"aopc": float((p0 - removed).mean()), "comp": float((p0 - removed).mean()),
            "suff": float((p0 - kept).mean()), "curve": (p0 - removed).tolist()}


def fidelity(model, tok, texts: list[str], n_steps: int | str) -> dict:
    ig = token_attributions(model, tok, texts, n_steps=n_steps, tol=1e-2)
    grad = token_attributions(model, tok, texts, method="gradient")
    gxi = token_attributions(model, tok, texts, method="gradient_x_input")
    methods: dict[str, list[dict]] = {"IG": [], "gradient (sum over hidden)": [], "gradient (L2 norm)": [],
                                      "gradient x input": []}
    rnd: dict[int, list[dict]] = {s: [] for s in SEEDS}
    for t, a, g, x in zip(texts, ig, grad, gxi, strict=True):
        target = int(a.target)
        methods["IG"].append(faithfulness(model, tok, t, a.scores, target))
        methods["gradient (sum over hidden)"].append(faithfulness(model, tok, t, g.scores, target))
        methods["gradient (L2 norm)"].append(faithfulness(model, tok, t, g.attributions.norm(dim=-1), target))
        methods["gradient x input"].append(faithfulness(model, tok, t, x.scores, target))
        for s in SEEDS:
            gen = torch.Generator().manual_seed(s * 100_003 + len(rnd[s]))
            rnd[s].append(faithfulness(model, tok, t, torch.rand(len(a.scores), generator=gen), target))
    table = {}
    for name, rows in methods.items():
        table[name] = {k: _mean_se([r[k] for r in rows]) for k in ("aopc", "comp", "suff")}
    per_seed = {s: {k: statistics.mean(r[k] for r in rows) for k in ("aopc", "suff")} for s, rows in rnd.items()}
    table["random (5 seeds)"] = {k: (statistics.mean(v[k] for v in per_seed.values()),
                                     statistics.stdev(v[k] for v in per_seed.values())) for k in ("aopc", "suff")}
    table["random (5 seeds)"]["comp"] = table["random (5 seeds)"]["aopc"]
    # paired differences IG - gradient per sentence
    diffs = {}
    for other in ("gradient (sum over hidden)", "gradient (L2 norm)", "gradient x input"):
        d = [a["aopc"] - b["aopc"] for a, b in zip(methods["IG"], methods[other], strict=True)]
        diffs[other] = (_mean_se(d), sum(x > 0 for x in d) / len(d))
    d_rand = [statistics.mean(a["aopc"] - rnd[s][i]["aopc"] for s in SEEDS) for i, a in enumerate(methods["IG"])]
    diffs["random (5 seeds)"] = (_mean_se(d_rand), sum(x > 0 for x in d_rand) / len(d_rand))
    curves = {name: [statistics.mean(r["curve"][j] for r in rows) for j in range(len(FRACTIONS))]
              for name, rows in methods.items()}
    curves["random (5 seeds)"] = [statistics.mean(r["curve"][j] for s in SEEDS for r in rnd[s])
                                  for j in range(len(FRACTIONS))]
    return {"table": table, "diffs": diffs, "curves": curves, "n": len(texts),
            "ig_steps": statistics.mean(r.steps for r in ig), "ig_err": statistics.median(map(rel_completeness, ig))}


def _mean_se(v: list[float]) -> tuple[float, float]:
    m = statistics.mean(v)
    return m, (statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0.0)


def heatmaps(model, tok, texts: list[str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, t in enumerate(texts):
        ig = token_attributions(model, tok, t, n_steps="auto", tol=1e-3)
        g = token_attributions(model, tok, t, method="gradient_x_input", target=ig.target)
        label = model.config.id2label.get(int(ig.target), ig.target)
        png, _ = render([ig, g], out_dir / f"attribution_example_{k + 1}",
                        title=f"IG (top) vs gradient x input (bottom), target class: {label}")
        paths.append(png)
    return paths


# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few sentences, small step counts (seconds)")
    ap.add_argument("--sentences", type=int, default=64, help="speed study sentences")
    ap.add_argument("--fidelity", type=int, default=300, help="fidelity study sentences")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--error-sentences", type=int, default=16, help="sentences of the error-against-steps table")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--figures", default=str(FIG))
    ap.add_argument("--parts", default="accuracy,speed,rules,profile,fidelity,heatmaps",
                    help="comma-separated sections to run (speed includes the error-against-steps table)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = classifier(torch.device("cpu"))
    data = movie_snippets()
    test = data["test"]
    lines = _Report()
    lines += [f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, shared machine; "
             f"KEXUE_CPU_LINEAR={os.environ.get('KEXUE_CPU_LINEAR', 'onednn')}"]
    if args.quick:
        texts, n_fid, reps = pick_sentences(test.texts, 2), 3, 1
    else:
        texts, n_fid, reps = pick_sentences(test.texts, args.sentences), args.fidelity, args.repeats
    acc = None
    if not args.quick and "accuracy" in args.parts.split(","):
        from kexue.text_classifier import accuracy

        acc = accuracy(model, tok, test)
        lines.append(f"classifier test accuracy: {acc:.4f} ({len(test)} sentences)")
    parts = set(args.parts.split(","))
    have_captum = "speed" in parts
    try:
        import captum  # noqa: F401
    except ImportError:
        have_captum = False
        parts.discard("speed")
        lines.append("captum not installed: speed comparison skipped (pip install -r requirements/bench.txt)")
    if have_captum:
        sp = speed(model, tok, texts, reps, args.quick)
        m = sp["median_s"]
        lines += [
            "",
            f"### Speed: {len(texts)} test sentences ({min(sp['tokens'])}-{max(sp['tokens'])} tokens, "
            f"{sum(sp['tokens'])} in all), n_steps = {sp['n']}, medians of {reps} runs in turns",
            "",
            "| provider | median s | spread | Captum / provider | model evaluations |",
            "|---|---|---|---|---|",
            f"| Captum LayerIG (per sentence, internal_batch_size={sp['best_ibs']}) | {m['captum']:.2f} | "
            f"{sp['spread']['captum']:.0%} | 1.00 | {sp['n'] * len(texts)} (+2 per sentence) |",
            f"| kexue n_steps={sp['n']} (default: packed, hand-written BERT integrand) | {m['kexue_n']:.2f} | "
            f"{sp['spread']['kexue_n']:.0%} | "
            f"{m['captum'] / m['kexue_n']:.2f} | {sp['n'] * len(texts)} (+2 per sentence) |",
            f"| kexue n_steps={sp['n']}, autograd integrand (`fast_path=False`) | {m['kexue_n_autograd']:.2f} | "
            f"{sp['spread']['kexue_n_autograd']:.0%} | {m['captum'] / m['kexue_n_autograd']:.2f} | "
            f"{sp['n'] * len(texts)} (+2 per sentence) |",
            f"| kexue auto (tol = Captum's error per sentence) | {m['kexue_auto']:.2f} | "
            f"{sp['spread']['kexue_auto']:.0%} | {m['captum'] / m['kexue_auto']:.2f} | {sum(sp['auto_steps'])} |",
            "",
            "Captum batching tuned (s for 2 sentences): "
            + ", ".join(f"ibs={k}: {v:.2f}" for k, v in sp["tune"].items()),
            f"Agreement at n = {sp['n']}: max relative difference of token scores, max over sentences "
            f"{max(sp['rel_diff']):.2e} (median {statistics.median(sp['rel_diff']):.2e}).",
            f"Captum's relative completeness error at n = {sp['n']}: "
            f"median {statistics.median(sp['captum_rel_err']):.2e}, max {max(sp['captum_rel_err']):.2e}.",
            f"kexue auto: steps per sentence {_distribution(sp['auto_steps'])}; "
            f"{sum(sp['auto_ok'])}/{len(sp['auto_ok'])} sentences reached Captum's error; model evaluations "
            f"{sp['n'] * len(texts) / sum(sp['auto_steps']):.2f}x fewer than Captum's {sp['n']} per sentence.",
        ]
        ev = error_vs_steps(model, tok, texts[:args.error_sentences], args.quick)
        lines += ["", f"### Completeness error against steps ({len(texts[:args.error_sentences])} sentences)", "",
                  "| run | mean steps | max steps | median rel. error | max rel. error |", "|---|---|---|---|---|"]
        lines += [f"| {a} | {b:.1f} | {c} | {d:.2e} | {e:.2e} |" for a, b, c, d, e in ev]
    if "rules" in parts:
        rr = rules(model, tok, texts[:args.error_sentences], args.quick)
        lines += ["", f"### Quadrature rules at equal points ({len(texts[:args.error_sentences])} sentences, relative "
                  "completeness error of one float32 integrand)", "",
                  "| rule | points | median rel. error | max rel. error |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c:.1e} | {d:.1e} |" for a, b, c, d in rr]
    n_prof = 4 if args.quick else 50
    if "profile" in parts:
        prof = profile(model, tok, texts[:8], n_prof)
        lines += ["", f"### Where kexue's time goes (n = {n_prof}, {len(texts[:8])} sentences; self CPU time)", "",
                  "| op | share |", "|---|---|"] + [f"| `{k}` | {v:.1%} |" for k, v in prof]
    if "fidelity" in parts:
        _fidelity_lines(lines, fidelity(model, tok, test.texts[:n_fid], 4 if args.quick else "auto"))
    fig_dir = Path(args.figures)
    examples = [t for t in test.texts if 8 <= len(t.split()) <= 16][:4]
    if "heatmaps" in parts:
        pngs = heatmaps(model, tok, examples[:1] if args.quick else examples, fig_dir)
        lines += ["", "Heatmaps: " + ", ".join(str(p) for p in pngs)]
    return "\n".join(lines)


def _fidelity_lines(lines, fid) -> None:
    lines += ["", f"### Faithfulness on the first {fid['n']} test sentences (target: the predicted class; IG: auto, "
              f"tol 1e-2, mean {fid['ig_steps']:.1f} steps, median rel. error {fid['ig_err']:.1e})", "",
              "| scores | deletion AOPC ↑ | comprehensiveness ↑ | sufficiency ↓ |", "|---|---|---|---|"]
    for name, row in fid["table"].items():
        pm = "±"
        lines.append(f"| {name} | {row['aopc'][0]:.4f} {pm} {row['aopc'][1]:.4f} | {row['comp'][0]:.4f} {pm} "
                     f"{row['comp'][1]:.4f} | {row['suff'][0]:.4f} {pm} {row['suff'][1]:.4f} |")
    lines += ["", "IG minus each other method, AOPC per sentence (mean ± s.e.; share of sentences where IG is ahead):",
              ""] + [f"- {k}: {v[0][0]:+.4f} ± {v[0][1]:.4f} ({v[1]:.0%})" for k, v in fid["diffs"].items()]
    lines += ["", "Deletion curve (probability drop at " + ", ".join(f"{f:.0%}" for f in FRACTIONS) + " removed):", ""]
    lines += [f"- {k}: " + ", ".join(f"{v:.3f}" for v in c) for k, c in fid["curves"].items()]


class _Report(list):
    """The report's lines, each printed (flushed) as it is added, so a long run shows its progress."""

    def __iadd__(self, more):
        for line in more:
            print(line, flush=True)
        self.extend(more)
        return self

    def append(self, line):
        print(line, flush=True)
        super().append(line)


def _distribution(steps: list[int]) -> str:
    counts: dict[int, int] = {}
    for s in steps:
        counts[s] = counts.get(s, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + f" (mean {statistics.mean(steps):.1f})"


if __name__ == "__main__":
    main()
