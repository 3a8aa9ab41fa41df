"""Non-termination of incomplete decoding (Welleck et al. 2020) on three models nobody here wrote.

    python bench/decoding_study.py [--model textgenrnn] [--prompts 50] [--max-len 500] [--seeds 0 1 2] [--quick]
    python bench/decoding_study.py --model austen  [--epochs 1] [--prompts 100] [--max-len 1500] [--quick]
    python bench/decoding_study.py --model smollm2 [--prompts 16] [--max-len 256] [--quick]

Claim tested: consistent top-k / nucleus sampling (eos kept in the candidate set) and the
self-terminating (ST / NMST) output layer drive r_L, the fraction of sequences without eos within L
tokens, to 0, where greedy, beam, top-k and nucleus leave it above 0, at a small perplexity cost.
Deterministic strategies run once; sampling ones once per seed (mean ± std over seeds).

* ``textgenrnn``: kexue.datasets.load_textgenrnn (Reddit titles; eos = ``<s>``); prompts: ``<s>`` +
  the first 10 characters of held-out English sentences (kexue.datasets.movie_snippets, test split).
* ``austen``: word-level 2-layer LSTMs trained here on kexue.datasets.austen_novels (train split,
  sentences ending in ``<eos>``): a softmax baseline, ST with ε ∈ {1e-2, 1e-3, 1e-4} and NMST
  (ε = 1e-3) through kexue.nn.SelfTerminatingHead; test perplexity of each; prompts: ``<eos>`` + the
  first 10 words of test-split sentences.  Checkpoints are cached (``$KEXUE_DATA/decoding-study``).
* ``smollm2``: SmolLM2-135M-Instruct (kexue.datasets.load_smollm2) in its chat format, asked to
  continue the first 12 tokens of test-split Austen sentences; eos = ``<|im_end|>``.
``--quick`` (every model): a short smoke run; for ``austen`` on synthetic sentences (no download, what
tests/test_decoding_study_script.py runs); ``smollm2 --quick`` still fetches and loads the 98 MB GGUF.
"""

from __future__ import annotations

import argparse
import collections
import math
import random
import re
import statistics
import time

import torch
from torch import nn

from kexue import datasets
from kexue.datasets import textgenrnn as tg
from kexue.decoding import generate
from kexue.decoding.generate import select_rows
from kexue.nn import SelfTerminatingHead

STRATEGIES = [
    ("greedy", dict(strategy="greedy")),
    ("beam 2", dict(strategy="beam", beam_size=2)),
    ("beam 4", dict(strategy="beam", beam_size=4)),
    ("top-k 2", dict(strategy="sample", top_k=2)),
    ("top-k 4", dict(strategy="sample", top_k=4)),
    ("nucleus 0.2", dict(strategy="sample", top_p=0.2)),
    ("nucleus 0.4", dict(strategy="sample", top_p=0.4)),
    ("consistent top-k 2", dict(strategy="sample", top_k=2, consistent=True)),
    ("consistent top-k 4", dict(strategy="sample", top_k=4, consistent=True)),
    ("consistent nucleus 0.2", dict(strategy="sample", top_p=0.2, consistent=True)),
    ("consistent nucleus 0.4", dict(strategy="sample", top_p=0.4, consistent=True)),
]
# the decoders of an ST / NMST model (it stops by construction; sampling is not needed to show it)
ST_STRATEGIES = STRATEGIES[:3]
# (name, mode, eps) of the Austen LSTMs; mode None = the softmax baseline
AUSTEN_MODELS = [("baseline", None, None), ("ST 1e-2", "st", 1e-2), ("ST 1e-3", "st", 1e-3),
                 ("ST 1e-4", "st", 1e-4), ("NMST 1e-3", "nmst", 1e-3)]


def rl_table(step_fn, prompts, eos: int, strategies, max_len: int, seeds, *, label: str = "",
             reorder_state=select_rows) -> list[dict]:
    """r_L and mean length of every strategy (sampling ones: mean ± std over ``seeds``), printed as it goes."""
    print(f"{'strategy':<32} {'r_L':>14} {'mean length':>12} {'s':>7}")
    rows = []
    for name, kw in strategies:
        kw = dict(kw)
        if kw.pop("consistent", False):
            kw["keep"] = eos
        run_seeds = seeds if kw["strategy"] == "sample" else [None]
        r, lengths = [], []
        t0 = time.perf_counter()
        for seed in run_seeds:
            g = {"generator": torch.Generator().manual_seed(seed)} if seed is not None else {}
            out = generate(step_fn, prompts, eos_id=eos, max_len=max_len, reorder_state=reorder_state, **g, **kw)
            r.append(out.non_termination_ratio())
            lengths.append(float(out.lengths.double().mean()))
        mean_r = statistics.mean(r)
        std_r = statistics.stdev(r) if len(r) > 1 else 0.0
        full = f"{label} {name}".strip()
        rows.append(dict(strategy=full, r_L=mean_r, r_L_std=std_r, length=statistics.mean(lengths), n_seeds=len(r)))
        rl = f"{mean_r:.3f} ± {std_r:.3f}" if len(r) > 1 else f"{mean_r:.3f}"
        print(f"{full:<32} {rl:>14} {statistics.mean(lengths):12.1f} {time.perf_counter() - t0:7.1f}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------------
# textgenrnn (character LSTM, pretrained)

def make_step_fn(model):
    def step_fn(ids, state):
        window = torch.zeros(ids.shape[0], tg.MAX_LENGTH, dtype=torch.long) if state is None else state
        window = torch.cat([window, ids], dim=1)[:, -tg.MAX_LENGTH:]
        with torch.no_grad():
            return model(window), window

    return step_fn


def textgenrnn_study(args) -> list[dict]:
    model, vocab = datasets.load_textgenrnn()
    eos = vocab[tg.META_TOKEN]
    texts = datasets.movie_snippets()["test"].texts[: args.prompts]
    prompts = [torch.tensor([eos] + tg.encode(t[:10], vocab)) for t in texts]
    print(f"textgenrnn, {len(prompts)} prompts, L = {args.max_len}, seeds {args.seeds}")
    return rl_table(make_step_fn(model), prompts, eos, STRATEGIES, args.max_len, args.seeds)


# ----------------------------------------------------------------------------------------------
# Austen: word-level 2-layer LSTMs trained here (softmax, ST, NMST)

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+|[^\sa-z0-9]")


def words(sentence: str) -> list[str]:
    """Lower-cased words (with their apostrophes), numbers and single punctuation marks."""
    return _WORD.findall(sentence.lower())


class Vocab:
    """<pad> = 0, <eos> = 1, <unk> = 2, then the training words seen at least ``min_count`` times."""

    def __init__(self, sentences: list[list[str]], min_count: int):
        counts = collections.Counter(w for s in sentences for w in s)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        self.itos = [PAD, EOS, UNK, *kept]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, sentence: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(w, unk) for w in sentence]


class WordLSTM(nn.Module):
    """Embedding → 2-layer LSTM → tied linear head; ``mode`` None (softmax), "st" or "nmst" (kexue.nn)."""

    def __init__(self, vocab_size: int, dim: int, mode: str | None, eps: float | None, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.lm_head = nn.Linear(dim, vocab_size)
        self.lm_head.weight = self.embedding.weight
        self.st = None if mode is None else SelfTerminatingHead(self.lm_head, eos_token_id=1, eps=eps, mode=mode)

    def log_probs(self, ids, hc=None, st_state=None):
        """(log-probs (B, T, V), (h, c), ST state) for input ids (B, T) continuing the given states."""
        out, hc = self.lstm(self.drop(self.embedding(ids)), hc)
        out = self.drop(out)
        if self.st is None:
            return torch.log_softmax(self.lm_head(out).float(), dim=-1), hc, None
        logp, st_state = self.st(out, st_state, return_state=True)
        return logp, hc, st_state


def encode_split(vocab: Vocab, sentences: list[str], max_words: int | None = None) -> list[list[int]]:
    """Each sentence as ids + <eos>; longer than ``max_words`` words: dropped (training only)."""
    seqs = [vocab.encode(words(s)) for s in sentences]
    return [s + [1] for s in seqs if s and (max_words is None or len(s) <= max_words)]


def batches(seqs: list[list[int]], batch_size: int, rng: random.Random | None):
    """(input (B, T), target (B, T)) batches of similar length; input = <eos> + sequence[:-1], pad 0."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    chunks = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        T = max(len(seqs[i]) for i in chunk)
        tgt = torch.zeros(len(chunk), T, dtype=torch.long)
        for r, i in enumerate(chunk):
            tgt[r, : len(seqs[i])] = torch.tensor(seqs[i])
        inp = torch.cat([torch.ones(len(chunk), 1, dtype=torch.long), tgt[:, :-1]], dim=1)
        yield inp, tgt


def nll(model: WordLSTM, inp, tgt) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the non-pad targets, and their number."""
    logp, _, _ = model.log_probs(inp)
    mask = tgt != 0
    tok = logp.gather(-1, tgt[..., None])[..., 0]
    return -(tok * mask).sum(), int(mask.sum())


@torch.no_grad()
def perplexity(model: WordLSTM, seqs: list[list[int]], batch_size: int = 64) -> float:
    model.eval()
    total, count = 0.0, 0
    for inp, tgt in batches(seqs, batch_size, None):
        s, n = nll(model, inp, tgt)
        total, count = total + float(s), count + n
    return math.exp(total / count)


def train_lm(model: WordLSTM, train: list[list[int]], valid: list[list[int]], *, epochs: int, batch_size: int,
             lr: float, seed: int, time_cap_s: float) -> dict:
    """Adam, gradient clipping at 1, the learning rate decayed linearly to 0 over all epochs; stops at
    ``time_cap_s`` (the issue's cap per model)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total))
    t0, cpu0 = time.perf_counter(), time.process_time()
    steps = 0
    for epoch in range(epochs):
        model.train()
        for inp, tgt in batches(train, batch_size, rng):
            s, n = nll(model, inp, tgt)
            opt.zero_grad()
            (s / n).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            steps += 1
            if time.perf_counter() - t0 > time_cap_s:
                break
        ppl = perplexity(model, valid)
        print(f"  epoch {epoch + 1}: {steps} steps, valid ppl {ppl:.1f}, {time.perf_counter() - t0:.0f} s", flush=True)
        if time.perf_counter() - t0 > time_cap_s:
            break
    return dict(steps=steps, epochs_run=epoch + 1, wall_s=time.perf_counter() - t0,
                cpu_s=time.process_time() - cpu0, valid_ppl=ppl)


def lstm_step_fn(model: WordLSTM):
    """step_fn for kexue.decoding.generate; state = (h, c) batch-first (B, 2, H) and the ST state."""

    @torch.no_grad()
    def step_fn(ids, state):
        hc, st_state = None, None
        if state is not None:
            h, c, st_state = state
            hc = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
        logp, (h, c), st_state = model.log_probs(ids, hc, st_state)
        return logp[:, -1], (h.transpose(0, 1), c.transpose(0, 1), st_state)

    return step_fn


def synthetic_sentences(n: int, seed: int) -> list[str]:
    """Tiny made-up corpus for --quick: 'the cat saw a dog .' style sentences of 3-12 words."""
    rng = random.Random(seed)
    nouns, verbs, dets = ["cat", "dog", "house", "letter", "sister"], ["saw", "wrote", "liked"], ["the", "a"]
    out = []
    for _ in range(n):
        ws = [rng.choice(dets), rng.choice(nouns), rng.choice(verbs), rng.choice(dets), rng.choice(nouns)]
        while rng.random() < 0.4 and len(ws) < 12:
            ws += ["and", rng.choice(nouns)]
        out.append(" ".join(ws).capitalize() + ".")
    return out


def austen_study(args) -> list[dict]:
    if args.quick:
        data = {"train": synthetic_sentences(400, 0), "valid": synthetic_sentences(50, 1),
                "test": synthetic_sentences(50, 2)}
    else:
        data = datasets.austen_novels()
    vocab = Vocab([words(s) for s in data["train"]], args.min_count)
    train = encode_split(vocab, data["train"], args.max_words)
    valid, test = encode_split(vocab, data["valid"]), encode_split(vocab, data["test"])
    n_train_all = len(data["train"])
    print(f"Austen: vocabulary {len(vocab)} (train words seen >= {args.min_count} times), train {len(train)} "
          f"sentences ({n_train_all - len(train)} longer than {args.max_words} words dropped, "
          f"{sum(map(len, train))} tokens), valid {len(valid)}, test {len(test)}")
    prompt_len = args.prompt_words
    candidates = [s for s in test if len(s) > prompt_len + 1]  # the prompt leaves something to predict
    prompts = [torch.tensor([1] + s[:prompt_len]) for s in candidates[:: max(1, len(candidates) // args.prompts)]]
    prompts = prompts[: args.prompts]
    cache = datasets.cache_dir() / "decoding-study"
    cache.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, mode, eps in AUSTEN_MODELS[: 2 if args.quick else None]:
        torch.manual_seed(args.train_seed)
        model = WordLSTM(len(vocab), args.dim, mode, eps, args.dropout)
        key = (f"austen-{name.replace(' ', '_')}-v{len(vocab)}-d{args.dim}-e{args.epochs}-b{args.batch_size}"
               f"-s{args.train_seed}.pt")
        path = cache / key
        if path.exists() and not args.quick and not args.retrain:
            saved = torch.load(path, weights_only=False)
            model.load_state_dict(saved["state"])
            info = saved["info"]
            print(f"{name}: loaded {path}")
        else:
            print(f"{name}: training ({args.epochs} epochs max, {args.time_cap:.0f} s cap)", flush=True)
            info = train_lm(model, train, valid, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            seed=args.train_seed, time_cap_s=args.time_cap)
            if not args.quick:
                torch.save({"state": model.state_dict(), "info": info}, path)
        model.eval()
        ppl = perplexity(model, test)
        print(f"{name}: test perplexity {ppl:.2f} (valid {info['valid_ppl']:.2f}; {info['steps']} steps, "
              f"{info['cpu_s'] / 60:.1f} CPU-min)", flush=True)
        print(f"{name}: {len(prompts)} prompts, L = {args.max_len}, seeds {args.seeds}")
        strategies = STRATEGIES if mode is None else ST_STRATEGIES
        for row in rl_table(lstm_step_fn(model), prompts, 1, strategies, args.max_len, args.seeds, label=name):
            rows.append(dict(row, model=name, test_ppl=ppl, **{k: info[k] for k in ("steps", "cpu_s")}))
    return rows


# ----------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (pretrained transformer, KV cache)

def smollm2_step_fn(model):
    """step_fn over transformers' KV cache: the state is (cache, number of positions so far)."""

    @torch.no_grad()
    def step_fn(ids, state):
        cache, past = (None, 0) if state is None else state
        pos = torch.arange(past, past + ids.shape[1])[None].expand(ids.shape[0], -1)
        out = model(input_ids=ids, cache=cache, position_ids=pos, use_cache=True)  # transformers 5.24: `cache`
        return out.logits[:, -1].float(), (out.cache, past + ids.shape[1])

    return step_fn


def reorder_cache(state, index):
    cache, past = state
    for layer in cache.layers:  # transformers >= 4.56: DynamicCache.layers[i].keys / .values, (B, heads, T, d)
        layer.keys = layer.keys.index_select(0, index)
        layer.values = layer.values.index_select(0, index)
    return cache, past


def smollm2_study(args) -> list[dict]:
    model, tok = datasets.load_smollm2()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    sentences = datasets.austen_novels()["test"]
    texts = []
    for s in sentences:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        if len(ids) > args.prompt_tokens + 4:  # equal-length prompts run as one batch
            texts.append(tok.decode(ids[: args.prompt_tokens]))
    texts = texts[:: max(1, len(texts) // args.prompts)][: args.prompts]
    prompts = []
    for t in texts:
        msgs = [{"role": "user", "content": f"Continue this passage: {t}"}]
        enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
        prompts.append((enc if isinstance(enc, torch.Tensor) else enc["input_ids"])[0])
    lengths = collections.Counter(p.numel() for p in prompts)
    print(f"SmolLM2-135M-Instruct (GGUF Q4_1), {len(prompts)} prompts (token lengths {dict(lengths)}), "
          f"eos <|im_end|> = {eos}, L = {args.max_len}, seeds {args.seeds}")
    return rl_table(smollm2_step_fn(model), prompts, eos, STRATEGIES, args.max_len, args.seeds,
                    reorder_state=reorder_cache)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("textgenrnn", "austen", "smollm2"), default="textgenrnn")
    ap.add_argument("--prompts", type=int, default=None, help="default: 50 textgenrnn, 100 austen, 16 smollm2")
    ap.add_argument("--max-len", type=int, default=None, help="default: 500 textgenrnn, 1500 austen, 256 smollm2")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (smollm2: 0)")
    ap.add_argument("--threads", type=int, default=1)  # (small models: more threads only spin on a shared machine)
    ap.add_argument("--quick", action="store_true", help="a few prompts, short L, one seed (a smoke test)")
    g = ap.add_argument_group("austen")
    g.add_argument("--epochs", type=int, default=1)
    g.add_argument("--time-cap", type=float, default=30 * 60, help="training seconds per model (the issue's cap)")
    g.add_argument("--dim", type=int, default=128)
    g.add_argument("--min-count", type=int, default=5)
    g.add_argument("--max-words", type=int, default=80, help="longer training sentences are dropped")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--train-seed", type=int, default=0)
    g.add_argument("--prompt-words", type=int, default=10)
    g.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    g = ap.add_argument_group("smollm2")
    g.add_argument("--prompt-tokens", type=int, default=12)
    args = ap.parse_args(argv)
    defaults = {"textgenrnn": (50, 500, [0, 1, 2]), "austen": (100, 1500, [0, 1, 2]), "smollm2": (16, 256, [0])}
    prompts, max_len, seeds = defaults[args.model]
    args.prompts = args.prompts or prompts
    args.max_len = args.max_len or max_len
    args.seeds = args.seeds or seeds
    if args.quick:
        args.prompts, args.max_len, args.seeds = 4, 30, [0]
        args.epochs, args.dim, args.min_count, args.time_cap, args.prompt_words = 1, 16, 1, 60.0, 3
    torch.set_num_threads(args.threads)
    study = {"textgenrnn": textgenrnn_study, "austen": austen_study, "smollm2": smollm2_study}[args.model]
    return study(args)


if __name__ == "__main__":
    main()
