"""Integrated-gradients quadrature on the fine-tuned MiniLM classifier (issue 12, RESULTS.md).

Two measurements behind the "equal completeness error" paragraphs of bench/RESULTS.md:

* ``sweep``: ``n_steps="auto"`` at tolerances 1e-1 … 1e-4 on the first N test sentences (mean/max
  steps, median/max relative completeness error), then auto with each sentence's own Captum
  Gauss-Legendre n = 50 error as its tol (steps used, sentences that reach it).  Run it on an
  older commit to compare rules (that is how the Romberg column was made).
* ``panels``: the integrand s(α) = (e − e')·∇F and F(α) sampled on 2^10 + 1 equally spaced points
  per sentence, then locally adaptive composite rules simulated on those samples.  Each panel's
  error is known exactly, Q_[a,b](s) − (F(b) − F(a)), because every forward gives F with ∂F; the
  panels whose error exceeds their share of tol·|ΔF| are bisected (Simpson or Boole panels, both
  nested under bisection).  Reports points used and the error reached, next to Gauss-Legendre.

* ``mapped``: an oracle bound for variable changes.  The integrand's bump is located from s(α) sampled
  on 257 points (centre μ and width σ of s², which no real run knows in advance), then Gauss-Legendre
  runs in u = G(α), G the CDF of the density m + (1 − m)·N(μ, (κσ)²) truncated to [0, 1]: the nodes are
  G⁻¹(u_k) and the weights w_k / G'(α_k).  The best of m ∈ {0.2, 0.4}, κ ∈ {1, 1.5, 2} is kept per
  sentence and n, so the figure is optimistic for any rule that must find the bump with its own points.

``python bench/attribution_quadrature.py sweep --sentences 16``;
``python bench/attribution_quadrature.py panels --sentences 8``;
``python bench/attribution_quadrature.py mapped --sentences 8``; ``--quick`` for the test.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_study import captum_layer_ig, classifier, path_integrand, rel_completeness  # noqa: E402

from kexue.attribution import token_attributions  # noqa: E402
from kexue.datasets import movie_snippets  # noqa: E402

PANEL_WEIGHTS = {2: np.array([1, 4, 1]) / 6, 4: np.array([7, 32, 12, 32, 7]) / 90}  # Simpson, Boole
PANEL_NAMES = {2: "Simpson", 4: "Boole"}


def sweep(model, tok, texts: list[str], tols: tuple[float, ...]) -> list[str]:
    out = ["| tol | mean steps | max steps | median rel. error | max rel. error |", "|---|---|---|---|---|"]
    for tol in tols:
        res = token_attributions(model, tok, texts, n_steps="auto", tol=tol, max_steps=129)
        e = [rel_completeness(r) for r in res]
        out.append(f"| {tol:g} | {statistics.mean(r.steps for r in res):.1f} | {max(r.steps for r in res)} | "
                   f"{statistics.median(e):.2e} | {max(e):.2e} |")
    try:
        cap = captum_layer_ig(model, tok, texts, 50, 25)
    except ImportError:
        return [*out, "", "captum not installed: equal-error run skipped"]
    ours = token_attributions(model, tok, texts, n_steps=50)
    tol_each = [max(abs(d) / max(abs(r.f_input - r.f_baseline), 1e-12), 1e-7) for r, (_, d) in zip(ours, cap,
                                                                                                   strict=True)]
    auto = token_attributions(model, tok, texts, n_steps="auto", tol=tol_each, max_steps=129)
    ok = sum(rel_completeness(r) <= t for r, t in zip(auto, tol_each, strict=True))
    steps = [r.steps for r in auto]
    return [*out, "", "Captum GL-50 relative error per sentence: " + " ".join(f"{t:.1e}" for t in tol_each),
            f"auto at each sentence's Captum error: steps {steps}, mean {statistics.mean(steps):.1f}, "
            f"reached {ok}/{len(auto)}"]


def sample(model, tok, text: str, level: int) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
    """s(α) and F(α) at the 2^level + 1 equally spaced points, and the Gauss-Legendre sums."""
    from kexue.attribution.quadrature import rule

    s_and_f = path_integrand(model, tok, text)

    def at(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [s_and_f(a[c:c + 64]) for c in range(0, len(a), 64)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    s, f = at(torch.arange(2**level + 1, dtype=torch.float64) / 2**level)
    gl = {}
    for n in (16, 32, 50, 64):
        a, w = rule("gausslegendre", n)
        gl[n] = float((at(a)[0] * w).sum())
    return s.numpy(), f.numpy(), gl


def adaptive_panels(s: np.ndarray, f: np.ndarray, tol: float, order: int) -> tuple[int, float]:
    """Points used and relative completeness error of the locally adaptive composite rule."""
    N = len(s) - 1
    W = PANEL_WEIGHTS[order]
    df = f[-1] - f[0]
    panels = [(0, N // 2), (N // 2, N)]
    while True:
        est, err = [], []
        for a, b in panels:
            idx = np.linspace(a, b, order + 1).astype(int)
            q = (b - a) / N * float((W * s[idx]).sum())
            est.append(q)
            err.append(q - (f[b] - f[a]))
        points = {int(i) for a, b in panels for i in np.linspace(a, b, order + 1).astype(int)}
        rel = abs(sum(est) - df) / abs(df)
        split = [abs(e) > tol * abs(df) * (b - a) / N and b - a >= 2 * order for (a, b), e in zip(panels, err,
                                                                                                 strict=True)]
        if np.abs(err).sum() <= tol * abs(df) or not any(split):
            return len(points), rel
        panels = [half for p, sp in zip(panels, split, strict=True)
                  for half in (((p[0], (p[0] + p[1]) // 2), ((p[0] + p[1]) // 2, p[1])) if sp else (p,))]


def panels(model, tok, texts: list[str], level: int, tols: tuple[float, ...]) -> list[str]:
    head = "| sentence | tokens | GL 16 / 32 / 50 / 64 rel. error |" + "".join(
        f" {PANEL_NAMES[o]} tol {t:g}: points, error |" for o in (2, 4) for t in tols)
    out = [head, "|" + "---|" * (3 + 2 * len(tols))]
    for i, text in enumerate(texts):
        s, f, gl = sample(model, tok, text, level)
        df = f[-1] - f[0]
        row = f"| {i} | {len(tok(text)['input_ids'])} | " + " / ".join(f"{abs(gl[n] - df) / abs(df):.1e}" for n in gl)
        for o in (2, 4):
            for t in tols:
                p, e = adaptive_panels(s, f, t, o)
                row += f" | {p}, {e:.1e}"
        out.append(row + " |")
    return out


def mapped_rule(n: int, mu: float, sig: float, mix: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of Gauss-Legendre n in u = G(α) (see the module docstring), as a rule in α."""
    from kexue.attribution.quadrature import rule

    u, w = (x.numpy() for x in rule("gausslegendre", n))
    cdf = lambda x: 0.5 * (1 + np.vectorize(math.erf)((x - mu) / (sig * math.sqrt(2))))  # noqa: E731
    z = cdf(1.0) - cdf(0.0)
    G = lambda x: mix * x + (1 - mix) * (cdf(x) - cdf(0.0)) / z  # noqa: E731
    lo, hi = np.zeros_like(u), np.ones_like(u)
    for _ in range(60):  # G is increasing: bisection to float64 resolution
        mid = (lo + hi) / 2
        below = G(mid) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    a = (lo + hi) / 2
    dens = mix + (1 - mix) * np.exp(-0.5 * ((a - mu) / sig) ** 2) / (sig * math.sqrt(2 * math.pi)) / z
    return a, w / dens


def mapped(model, tok, texts: list[str], ns: tuple[int, ...]) -> list[str]:
    from kexue.attribution.quadrature import rule

    out = ["| sentence | GL 50 rel. error | bump μ, σ |" + "".join(f" n = {n}: GL / mapped (oracle) |" for n in ns),
           "|" + "---|" * (3 + len(ns))]
    for i, text in enumerate(texts):
        s_and_f = path_integrand(model, tok, text)

        def quad(a: np.ndarray, w: np.ndarray, s_and_f=s_and_f) -> float:
            return float((s_and_f(torch.as_tensor(a, dtype=torch.float64))[0].numpy() * w).sum())

        grid = torch.arange(257, dtype=torch.float64) / 256
        s, f = (x.numpy() for x in s_and_f(grid))
        df = f[-1] - f[0]
        g, wgt = grid.numpy(), s**2
        mu = float((g * wgt).sum() / wgt.sum())
        sd = math.sqrt(float(((g - mu) ** 2 * wgt).sum() / wgt.sum()))
        rel = lambda q, df=df: abs(q - df) / abs(df)  # noqa: E731
        row = f"| {i} | {rel(quad(*(x.numpy() for x in rule('gausslegendre', 50)))):.1e} | {mu:.2f}, {sd:.3f}"
        for n in ns:
            plain = rel(quad(*(x.numpy() for x in rule("gausslegendre", n))))
            best = min(rel(quad(*mapped_rule(n, mu, k * sd, m))) for m in (0.2, 0.4) for k in (1.0, 1.5, 2.0))
            row += f" | {plain:.1e} / {best:.1e}"
        out.append(row + " |")
    return out


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=("sweep", "panels", "mapped"))
    ap.add_argument("--sentences", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 sentences, coarse grid (seconds)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tok = classifier(torch.device("cpu"))
    texts = movie_snippets()["test"].texts[:2 if args.quick else args.sentences]
    if args.part == "sweep":
        lines = sweep(model, tok, texts, (1e-1,) if args.quick else (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4))
    elif args.part == "mapped":
        lines = mapped(model, tok, texts, (8,) if args.quick else (16, 24, 32))
    else:
        lines = panels(model, tok, texts, 5 if args.quick else 10, (1e-2,) if args.quick else (1e-3, 1e-4, 1e-5))
    report = "\n".join(lines)
    print(report)
    return report


if __name__ == "__main__":
    main()
