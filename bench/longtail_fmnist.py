"""Logit adjustment and flooding on long-tailed Fashion-MNIST: balanced test accuracy of a small CPU model.

    python bench/longtail_fmnist.py [--seeds 0,1,2] [--epochs 30] [--flood 0.1]
        [--flood-modes batch,sample] [--threads 1] [--data-dir DIR] [--out table.md]

Evidence for the two papers behind ``kexue.cross_entropy``'s ``prior``/``tau`` and ``flood`` options:
Menon et al. 2020, "Long-tail learning via logit adjustment", and Ishida et al. 2020, "Do we need zero
training loss after achieving zero training error?".

Data.  Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` through the shared loader
``kexue.datasets.fashion_mnist`` (``/usr/share/datasets/fashion-mnist`` when installed, else fetched with
``apt-get download`` into the kexue cache; or ``--data-dir``: the four ``*-idx?-ubyte[.gz]`` files).
The train set is made long-tailed with exponential imbalance ratio rho = 100 (``--ratio``): in the
fixed class order of the labels 0..9 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt,
Sneaker, Bag, Ankle boot), class c keeps n_c = floor(n_max * rho^(-c/(C-1))) images, n_max = 6000,
i.e. 6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60 (14886 in all).  Which images a class
keeps is drawn with a ``torch.Generator`` seeded by ``--data-seed`` (the same subset for every
training seed).  The test set is the untouched, balanced 10k test set (1000 per class), so the
balanced accuracy (mean per-class recall) reported here equals the plain test accuracy.

Model and training.  An MLP 784-256-10 with ReLU (well under 1 s per epoch on one thread; a 30-epoch training
takes 10-25 s on the busy shared cores used here), or
``--model cnn`` (conv3x3(16)-ReLU-maxpool2, conv3x3(32)-ReLU-maxpool2, linear(1568, 10); about 40x
slower on CPU); pixels standardised with the long-tailed train set's mean and std; SGD with
momentum 0.9, weight decay 5e-4, batch 128, learning rate ``--lr`` (0.05) with a cosine decay
to 0 over ``--epochs`` epochs, initialisation and batch order from the training seed.
Every loss is ``kexue.cross_entropy(..., backend="auto")`` (the C++ CPU kernel).

Methods (one row each; "post-hoc" rows reuse the model above them, so there are
2 * (1 + len(flood modes)) trainings per seed):

* ``CE``: plain cross-entropy; predicts argmax of the logits.
* ``CE + post-hoc LA``: the same model, predicting argmax of ``kexue.adjust_logits(logits, pi,
  tau=1)`` = logits - log pi, pi = the train prior (Menon et al.'s post-hoc correction).
* ``LA loss``: trained with ``kexue.cross_entropy(logits, y, prior=train counts, tau=1)`` (loss on
  logits + log pi, Menon et al.'s logit-adjusted loss); predicts argmax of the raw logits.
* each of the above trained with flooding at level b = ``--flood``: ``flood_mode="batch"``
  (|L - b| + b of the mini-batch mean, Ishida et al.) and, with ``--flood-modes batch,sample``,
  ``flood_mode="sample"`` (each example's loss flooded before the mean, "iFlood").

Flood level.  Ishida et al. pick b by validation from the grid {0.00, 0.01, ..., 0.10} for
their benchmark data sets.  This script does not tune b: it uses one level, b = 0.1, the top
of that range, for every method (``--flood`` changes it).  It was fixed from the training loss
alone, before any flooded model was trained or evaluated: plain CE's mean training loss per epoch falls below
0.1 only after about half of the 30 epochs and reaches about 0.05 in the last epochs, so a level
of 0.05 or less would flood only the last few epochs.  With the logit-adjusted loss the same b
is applied to the adjusted loss.  The table's "flooded" column shows how often the flood was actually active
(mini-batches whose mean loss was below b in batch mode, examples below b in sample mode, over
the whole run), so a flood row that never floods is visible as such.

Output: per method, mean +- sample std over the seeds of the balanced accuracy, the mean accuracy
of the 3 most frequent (head) and 3 least frequent (tail) training classes, the last epoch's mean
un-flooded training loss, and the flooded fraction.  ``--out FILE`` also writes the table as
markdown.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

import kexue
from kexue.datasets.fashion_mnist import CLASS_NAMES, DEBIAN_PACKAGE, INSTALLED_DIR, fashion_mnist
from kexue.datasets.fashion_mnist import FILES as FILES  # the IDX file names (the tests write them)

DEFAULT_DATA_DIR = INSTALLED_DIR
HEAD_TAIL = 3  # classes averaged for the head / tail columns


# ----------------------------------------------------------------------------------------------- data
def load_fashion_mnist(data_dir: str | None = None) -> dict[str, torch.Tensor]:
    """The four Fashion-MNIST arrays: train_x/test_x (N, 28, 28) uint8, train_y/test_y (N,) int64.

    The shared loader ``kexue.datasets.fashion_mnist``: ``None`` reads the installed Debian package or
    fetches it; a folder must hold the four IDX files.  Raises FileNotFoundError naming the Debian
    package when a file is missing."""
    return fashion_mnist(data_dir)


def longtail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """n_c = floor(n_max * ratio^(-c/(C-1))) for c = 0..C-1 (exponential profile; n_0 / n_{C-1} = ratio).

    A relative 1e-9 guards the floor against rounding (6000 * 100^-1 must give 60, not 59)."""
    if num_classes == 1:
        return [n_max]
    return [int(math.floor(n_max * ratio ** (-c / (num_classes - 1)) * (1 + 1e-9))) for c in range(num_classes)]


def longtail_indices(labels: torch.Tensor, counts: list[int], generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of a subset holding counts[c] examples of each class c, drawn without replacement."""
    keep = []
    for c, n in enumerate(counts):
        idx = (labels == c).nonzero().flatten()
        if n > idx.numel():
            raise ValueError(f"class {c} has {idx.numel()} examples, fewer than the {n} asked for")
        keep.append(idx[torch.randperm(idx.numel(), generator=generator)[:n]])
    return torch.cat(keep).sort().values


# ---------------------------------------------------------------------------------------- model, loop
def make_model(kind: str, image_shape: tuple[int, int], num_classes: int) -> nn.Module:
    """``cnn``: two conv3x3 + ReLU + maxpool2 blocks (16, 32 channels) and a linear head; ``mlp``: one
    hidden layer of 256."""
    h, w = image_shape
    if kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (h // 4) * (w // 4), num_classes))
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(h * w, 256), nn.ReLU(), nn.Linear(256, num_classes))
    raise ValueError(f"model must be 'cnn' or 'mlp', got {kind!r}")


@dataclass
class TrainConfig:
    model: str = "mlp"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_steps: int | None = None  # stop early (tests)


@dataclass
class TrainStats:
    last_epoch_loss: float  # mean un-flooded training loss over the last epoch's mini-batches
    flooded_fraction: float  # batches (batch mode) or examples (sample mode) below the flood level
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # un-flooded loss per step


def train(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed: int, cfg: TrainConfig,
          prior: torch.Tensor | None = None, flood: float | None = None, flood_mode: str = "batch"
          ) -> tuple[nn.Module, TrainStats]:
    """Train a fresh model on (x (N, 1, H, W) float, y (N,)) with kexue.cross_entropy (backend "auto").

    ``prior`` (class counts) gives the logit-adjusted loss (tau = 1); ``flood`` the flood level."""
    torch.manual_seed(seed)
    model = make_model(cfg.model, tuple(x.shape[-2:]), num_classes)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(x.shape[0] / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    losses, flooded, counted, step, t0 = [], 0, 0, 0, time.perf_counter()
    model.train()
    while step < total:
        for idx in torch.randperm(x.shape[0], generator=gen).split(cfg.batch_size):
            logits = model(x[idx])
            loss = kexue.cross_entropy(logits, y[idx], prior=prior, tau=1.0, flood=flood, flood_mode=flood_mode,
                                       backend="auto")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():  # the un-flooded loss, to report and to count the flooded steps
                rows = kexue.cross_entropy(logits.detach(), y[idx], prior=prior, tau=1.0, reduction="none")
            losses.append(float(rows.mean()))
            if flood is not None:
                if flood_mode == "batch":
                    flooded += int(losses[-1] < flood)
                    counted += 1
                else:
                    flooded += int((rows < flood).sum())
                    counted += rows.numel()
            step += 1
            if step >= total:
                break
    last = losses[-min(steps_per_epoch, len(losses)):]
    return model, TrainStats(last_epoch_loss=sum(last) / len(last),
                             flooded_fraction=flooded / counted if counted else float("nan"),
                             steps=step, seconds=time.perf_counter() - t0, losses=losses)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(xb) for xb in x.split(batch_size)])


def posthoc_adjusted(logits: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """Logits of a plain-CE model corrected for the train prior: ``logits - log(prior)`` (tau = 1); predict
    with their argmax."""
    return kexue.adjust_logits(logits, prior, tau=1.0)


def per_class_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Recall of each class (float64, (C,)); NaN for a class absent from ``target``."""
    hits = torch.bincount(target[pred == target], minlength=num_classes).double()
    support = torch.bincount(target, minlength=num_classes).double()
    return hits / support


def balanced_accuracy(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of the per-class accuracy (classes absent from ``target`` left out)."""
    acc = per_class_accuracy(pred, target, num_classes)
    return float(acc[~acc.isnan()].mean())


# ------------------------------------------------------------------------------------------ experiment
def method_plan(flood: float, flood_modes: list[str]) -> list[tuple[str, bool, float | None, str]]:
    """The trainings: (name, logit-adjusted loss?, flood level, flood mode)."""
    plan = [("CE", False, None, "batch"), ("LA loss", True, None, "batch")]
    for mode in flood_modes:
        tag = f"flood b={flood:g}" if mode == "batch" else f"iFlood b={flood:g}"
        plan += [(f"CE + {tag}", False, flood, mode), (f"LA loss + {tag}", True, flood, mode)]
    return plan


def standardise(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, H, W) -> float32 (N, 1, H, W), standardised with the training images' mean and std."""
    tr = train_x.float().div(255).unsqueeze(1)
    te = test_x.float().div(255).unsqueeze(1)
    mean, std = tr.mean(), tr.std()
    return (tr - mean) / std, (te - mean) / std


def run(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
        num_classes: int, seeds: list[int], cfg: TrainConfig, flood: float, flood_modes: list[str],
        log=print) -> list[dict]:
    """Train every method for every seed on the (already long-tailed) training set; one result dict per
    (method, seed): method, seed, balanced, head, tail (accuracies in [0, 1]), train_loss, flooded."""
    xtr, xte = standardise(train_x, test_x)
    counts = torch.bincount(train_y, minlength=num_classes).float()
    prior = kexue.class_prior(counts, num_classes)
    order = torch.argsort(counts, descending=True, stable=True)
    head, tail = order[:HEAD_TAIL], order[-HEAD_TAIL:]
    results = []

    def record(method, seed, logits, stats):
        acc = per_class_accuracy(logits.argmax(-1), test_y, num_classes)
        results.append(dict(method=method, seed=seed, balanced=float(acc.nanmean()), head=float(acc[head].mean()),
                            tail=float(acc[tail].mean()), train_loss=stats.last_epoch_loss,
                            flooded=stats.flooded_fraction))

    for seed in seeds:
        for name, adjusted, level, mode in method_plan(flood, flood_modes):
            model, stats = train(xtr, train_y, num_classes, seed=seed, cfg=cfg, prior=counts if adjusted else None,
                                 flood=level, flood_mode=mode)
            logits = predict_logits(model, xte)
            record(name, seed, logits, stats)
            if not adjusted:
                post = name.replace("CE", "CE + post-hoc LA", 1) if level is None else f"{name} + post-hoc LA"
                record(post, seed, posthoc_adjusted(logits, prior), stats)
            log(f"seed {seed} {name:<24} {stats.steps} steps {stats.seconds:6.1f} s  "
                f"balanced acc {results[-1 if adjusted else -2]['balanced']:.4f}")
    return results


def _mean_std(values: list[float]) -> str:
    if any(v != v for v in values):
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def summarise(results: list[dict]) -> list[list[str]]:
    """Rows [method, balanced, head, tail, train loss, flooded] (mean ± std over seeds, in %), in run order."""
    methods = list(dict.fromkeys(r["method"] for r in results))
    rows = []
    for m in methods:
        rs = [r for r in results if r["method"] == m]
        loss = [r["train_loss"] for r in rs]
        flooded = [r["flooded"] for r in rs]
        rows.append([m, _mean_std([r["balanced"] for r in rs]), _mean_std([r["head"] for r in rs]),
                     _mean_std([r["tail"] for r in rs]), f"{statistics.fmean(loss):.3f}",
                     "-" if any(f != f for f in flooded) else f"{100 * statistics.fmean(flooded):.1f}"])
    return rows


HEADER = ["method", "balanced acc %", f"head-{HEAD_TAIL} acc %", f"tail-{HEAD_TAIL} acc %",
          "train loss (last epoch)", "flooded %"]


def format_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(HEADER), "-" * (sum(widths) + 2 * (len(widths) - 1)), *map(line, rows)])


def format_markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=None, help=f"Fashion-MNIST IDX files (default: {DEFAULT_DATA_DIR} of the "
                   f"Debian package {DEBIAN_PACKAGE}, installed or fetched by kexue.datasets.fashion_mnist)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the long-tailed subset")
    p.add_argument("--ratio", type=float, default=100.0, help="imbalance ratio n_max / n_min")
    p.add_argument("--n-max", type=int, default=6000, help="images kept of class 0")
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--flood", type=float, default=0.1, help="flood level b")
    p.add_argument("--flood-modes", default="batch,sample", help="flood modes to run: batch, sample or both")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: a tiny model on shared cores "
                   "runs far slower with 2 threads that wait on each other)")
    p.add_argument("--out", help="also write the table (with the settings) as markdown here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = [m for m in args.flood_modes.split(",") if m]
    if any(m not in ("batch", "sample") for m in modes):
        p.error(f"--flood-modes takes batch and/or sample, got {args.flood_modes!r}")
    try:
        data = load_fashion_mnist(args.data_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    num_classes = len(CLASS_NAMES)
    counts = longtail_counts(args.n_max, num_classes, args.ratio)
    keep = longtail_indices(data["train_y"], counts, torch.Generator().manual_seed(args.data_seed))
    cfg = TrainConfig(model=args.model, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = (f"long-tailed train set: ratio {args.ratio:g}, counts {counts} ({len(keep)} images), data seed "
                f"{args.data_seed}; test: {len(data['test_y'])} balanced. Model {cfg.model}, {cfg.epochs} epochs, "
                f"batch {cfg.batch_size}, SGD lr {cfg.lr} cosine, momentum {cfg.momentum}, wd {cfg.weight_decay}; "
                f"flood b={args.flood:g} ({', '.join(modes) or 'none'}); seeds {seeds}; "
                f"{args.threads} thread(s); torch {torch.__version__}, kexue {_git_commit()}, "
                f"cross_entropy backend: {kexue.cross_entropy.explain(torch.empty(1, num_classes))}; "
                f"{platform.processor() or platform.machine()}")
    print(settings, file=sys.stderr)
    t0 = time.perf_counter()
    results = run(data["train_x"][keep], data["train_y"][keep], data["test_x"], data["test_y"],
                  num_classes=num_classes, seeds=seeds, cfg=cfg, flood=args.flood, flood_modes=modes,
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    rows = summarise(results)
    print(format_text(rows))
    print(f"({len(seeds)} seeds, mean ± std; total {time.perf_counter() - t0:.0f} s)")
    if args.out:
        with open(args.out, "w") as f:
            f.write(settings + "\n\n" + format_markdown(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
