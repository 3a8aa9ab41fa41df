"""BERT-of-Theseus study: compress the fine-tuned MiniLM sentiment classifier from 6 to 3 layers.

Claim tested (issue 14): Theseus keeps >= 97% of the predecessor's test accuracy at ~2x its CPU
speed, and beats the truncated-and-fine-tuned baseline by more than the seed spread.

Data: kexue.datasets.movie_snippets() (Rotten Tomatoes snippets from the vaderSentiment 3.3.2
sdist; fixed split).  Predecessor: kexue.text_classifier.sentiment_classifier() (all-MiniLM-L6-v2
+ head, fine-tuned and cached).  Every successor has 3 layers and trains the same parameters (its
3 layers; embeddings and head frozen, as the paper) for the same number of steps, batch size,
learning rate and data order, per seed (``--train-head``: the head and pooler too):

* theseus-const:  p = 0.5 for the first half of the steps, then the successor alone;
* theseus-linear: p = min(1, 0.3 + slope·t), reaching 1 at half the steps, then alone;
  (both start from layers 0-2, the paper's init, or with ``--theseus-init every_nth`` from 1, 3, 5);
* truncation:     predecessor layers 0-2 fine-tuned;
* kd:             the same 3 layers, loss 0.5·CE + 0.5·T²·KL(teacher/T ‖ student/T), T = 2,
                  the teacher's logits computed on each batch;
* truncation-alt: predecessor layers 1, 3, 5 fine-tuned: the control for Theseus's every_nth init
                  (the same starting point, no replacing).

Speed: sentences/s of the predecessor and of each method's successor (first seed) over the test
sentences, one thread, medians of rounds taken in turns.

    python bench/theseus_study.py                 # the study (see --help for its size)
    python bench/theseus_study.py --quick         # a tiny random model on 64 sentences: seconds
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

METHODS = ("theseus-const", "theseus-linear", "truncation", "kd", "truncation-alt")


def kept_layers(n: int, ratio: int, init: str) -> list[int]:
    """The predecessor layers a successor starts from: the first n / ratio (``"first"``) or the
    last of each group of ``ratio`` (``"every_nth"``), as :func:`kexue.theseus.wrap` copies them."""
    k = n // ratio
    return list(range(k)) if init == "first" else [g * ratio + ratio - 1 for g in range(k)]
KD_TEMPERATURE = 2.0
KD_ALPHA = 0.5


def truncated(predecessor: nn.Module, k: int | list[int], train_head: bool = False) -> nn.Module:
    """The predecessor with its first k layers only (or the layers listed); those layers train (and
    the head, pooler included, with ``train_head``), the embeddings stay frozen: the trainable set
    of Theseus."""
    from kexue import theseus
    from kexue.theseus.wrap import _embedding_params, _set_layer_index

    model = copy.deepcopy(predecessor)
    path, layers = theseus.find_layers(model)
    parent_path, _, attr = path.rpartition(".")
    keep = list(range(k)) if isinstance(k, int) else list(k)
    setattr(model.get_submodule(parent_path), attr, nn.ModuleList([layers[i] for i in keep]))
    for new_index, layer in enumerate(model.get_submodule(path)):
        _set_layer_index(layer, new_index)
    model.config.num_hidden_layers = len(keep)
    emb = _embedding_params(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(path + ".") or (train_head and id(p) not in emb))
    return model


def train_successor(method: str, predecessor: nn.Module, tokenizer, train, args,
                    seed: int) -> tuple[nn.Module, list[float]]:
    """The trained 3-layer successor (a plain model of the predecessor's class, eval mode) and the
    training loss of every step."""
    from kexue import theseus
    from kexue.text_classifier import encode, finetune

    common = dict(epochs=1, max_steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=seed,
                  max_length=args.max_length, progress=not args.no_progress, desc=f"{method} seed {seed}")
    half = max(1, args.steps // 2)
    if method.startswith("theseus"):
        sched = (theseus.ConstantReplacing(0.5, replacing_steps=half) if method == "theseus-const"
                 else theseus.LinearReplacing(base=0.3, slope=0.7 / half))
        wrapped = theseus.wrap(copy.deepcopy(predecessor), ratio=2, init=args.theseus_init, scheduler=sched,
                               seed=seed, train_head=args.train_head)
        losses = finetune(wrapped, tokenizer, train, on_step=lambda _: sched.step(), **common)
        return wrapped.successor(), losses
    n = len(theseus.find_layers(predecessor)[1])
    student = truncated(predecessor, kept_layers(n, 2, "every_nth" if method == "truncation-alt" else "first"),
                        args.train_head)
    if method in ("truncation", "truncation-alt"):
        losses = finetune(student, tokenizer, train, **common)
        return student.eval(), losses
    teacher = predecessor.eval()

    def kd_loss(logits, labels, idx):
        with torch.no_grad():
            batch = encode(tokenizer, [train.texts[i] for i in idx.tolist()], args.max_length)
            t = teacher(**batch).logits.float() / KD_TEMPERATURE
        s = logits.float() / KD_TEMPERATURE
        kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
        ce = torch.nn.functional.cross_entropy(logits.float(), labels)
        return KD_ALPHA * ce + (1 - KD_ALPHA) * KD_TEMPERATURE ** 2 * kl

    losses = finetune(student, tokenizer, train, loss_fn=kd_loss, **common)
    return student.eval(), losses


def loss_curve(losses: list[float], parts: int = 10) -> list[float]:
    """The mean training loss over each tenth of the steps (rounded): the curve to look at."""
    n = len(losses)
    cuts = [round(i * n / parts) for i in range(parts + 1)]
    return [round(statistics.mean(losses[a:b]), 3) for a, b in itertools.pairwise(cuts) if b > a]


def sentences_per_second(models: dict[str, nn.Module], tokenizer, texts: list[str], args) -> dict[str, float]:
    """Medians over rounds in turns (kexue.benchmarking.time_in_turns), one thread, no grad."""
    from kexue.benchmarking import time_in_turns
    from kexue.text_classifier import predict_logits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fns = {name: (lambda m=m: predict_logits(m, tokenizer, texts, batch_size=64, max_length=args.max_length))
               for name, m in models.items()}
        times = time_in_turns(fns, repeats=args.speed_repeats, warmup=1)
    finally:
        torch.set_num_threads(threads)
    return {name: len(texts) / statistics.median(t) for name, t in times.items()}


def _quick_setup():
    """A tiny random 4-layer BERT on the MiniLM tokenizer, 64 train / 64 test snippets."""
    import transformers

    from kexue.datasets import TextSplit, movie_snippets
    from kexue.text_classifier import finetune, minilm_path

    transformers.logging.set_verbosity_error()
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                                  num_attention_heads=2, intermediate_size=64, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg)
    data = movie_snippets()
    cut = {name: TextSplit(s.texts[:64], s.labels[:64], s.scores[:64]) for name, s in data.items()}
    finetune(model, tokenizer, cut["train"], max_steps=4, batch_size=16, lr=1e-3, progress=False)
    return model.eval(), tokenizer, cut


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=120, help="training steps of every successor")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test sentences")
    ap.add_argument("--speed-texts", type=int, default=256)
    ap.add_argument("--speed-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--theseus-init", choices=("first", "every_nth"), default="first",
                    help="theseus.wrap's init: the successor starts from layers 0-2 (the paper) or 1, 3, 5")
    ap.add_argument("--train-head", action="store_true", help="every method also trains the head and pooler")
    ap.add_argument("--quick", action="store_true", help="tiny random model, 64 sentences, 3 steps: seconds")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from kexue import theseus
    from kexue.text_classifier import accuracy

    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.quick:
        args.seeds, args.steps, args.batch_size, args.speed_texts, args.speed_repeats = [0, 1], 4, 16, 32, 2
        predecessor, tokenizer, data = _quick_setup()
    else:
        from kexue.datasets import movie_snippets
        from kexue.text_classifier import sentiment_classifier

        predecessor, tokenizer = sentiment_classifier(progress=not args.no_progress)
        data = movie_snippets()
    for p in predecessor.parameters():
        p.requires_grad_(False)
    test = data["test"]
    if args.test_limit:
        from kexue.datasets import TextSplit

        test = TextSplit(test.texts[:args.test_limit], test.labels[:args.test_limit], test.scores[:args.test_limit])
    base_acc = accuracy(predecessor, tokenizer, test, max_length=args.max_length)
    print(f"predecessor: test accuracy {base_acc:.4f} on {len(test.texts)} sentences", flush=True)
    # where each method starts: the successor cut from the predecessor, before any training step
    n_pred = len(theseus.find_layers(predecessor)[1])
    untrained = {init: accuracy(truncated(predecessor, kept_layers(n_pred, 2, init)), tokenizer, test,
                                max_length=args.max_length) for init in ("first", "every_nth")}
    print(f"untrained 3-layer cuts (layers 0-2 / 1, 3, 5): test accuracy {untrained}", flush=True)
    runs, timed = [], {}
    for seed in args.seeds:  # seed-major: an interrupted run still has every method for its first seeds
        for method in args.methods:
            w0, c0 = time.perf_counter(), time.process_time()
            model, losses = train_successor(method, predecessor, tokenizer, data["train"], args, seed)
            acc = accuracy(model, tokenizer, test, max_length=args.max_length)
            runs.append({"method": method, "seed": seed, "accuracy": acc, "kept": acc / base_acc,
                         "loss_curve": loss_curve(losses), "wall_s": time.perf_counter() - w0,
                         "cpu_s": time.process_time() - c0})
            print(f"{method:15s} seed {seed}: test accuracy {acc:.4f} ({acc / base_acc:.1%} of the predecessor); "
                  f"training loss by tenths {runs[-1]['loss_curve']}", flush=True)
            timed.setdefault(method, model)  # the first seed's successor joins the speed run
            if args.out:  # partial results survive an interrupted run
                args.out.write_text(json.dumps({"predecessor_accuracy": base_acc, "runs": runs}, indent=1) + "\n")
    # speed: the predecessor and each method's successor, side by side in turns
    speed = sentences_per_second({"predecessor": predecessor, **timed}, tokenizer, test.texts[:args.speed_texts], args)
    print(f"sentences/s (1 thread): {speed}", flush=True)
    last = next(iter(timed.values()))
    n_layers = predecessor.config.num_hidden_layers
    summary = {}
    for method in args.methods:
        accs = [r["accuracy"] for r in runs if r["method"] == method]
        summary[method] = {"mean": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                           "kept": statistics.mean(accs) / base_acc, "n": len(accs)}
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "predecessor_accuracy": base_acc, "test_size": len(test), "runs": runs, "summary": summary,
              "untrained": untrained,
              "sentences_per_s": speed,
              "speedup": {m: speed[m] / speed["predecessor"] for m in timed},
              "layers": {"predecessor": n_layers, "successor": last.config.num_hidden_layers},
              "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def table(result: dict) -> str:
    speed, layers = result["sentences_per_s"], result["layers"]
    lines = [f"predecessor: test accuracy {result['predecessor_accuracy']:.4f} on {result['test_size']} sentences",
             "", "| model | layers | test accuracy (mean ± std) | kept | seeds | sentences/s | speed-up |",
             "|---|---|---|---|---|---|---|",
             f"| predecessor | {layers['predecessor']} | {result['predecessor_accuracy']:.4f} | 100% | - | "
             f"{speed['predecessor']:.1f} | 1.00x |"]
    for init, acc in result.get("untrained", {}).items():
        lines.append(f"| untrained cut ({'layers 0-2' if init == 'first' else 'layers 1, 3, 5'}, 0 steps) | "
                     f"{layers['successor']} | {acc:.4f} | {acc / result['predecessor_accuracy']:.1%} | - | - | - |")
    for method, s in result["summary"].items():
        lines.append(f"| {method} | {layers['successor']} | {s['mean']:.4f} ± {s['std']:.4f} | {s['kept']:.1%} | "
                     f"{s['n']} | {speed[method]:.1f} | {result['speedup'][method]:.2f}x |")
    lines.append(f"\ncost: {result['wall_s'] / 60:.1f} wall-minutes, {result['cpu_s'] / 60:.1f} CPU-minutes")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
