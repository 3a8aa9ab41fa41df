"""Non-termination of incomplete decoding (Welleck et al. 2020) on three models nobody here wrote.

    python bench/decoding_study.py [--model textgenrnn] [--prompts 50] [--max-len 500] [--seeds 0 1 2] [--quick]
    python bench/decoding_study.py --model austen  [--epochs 1] [--prompts 100] [--max-len 1500] [--quick]
    python bench/decoding_study.py --model smollm2 [--prompts 16] [--max-len 256] [--quick]
    python bench/decoding_study.py --model austen --epochs 3 --train-seeds 0 1 [--models baseline "ST 1e-4"]
        [--decode all|deterministic|none]   (prints the NLL split: termination x word perplexity)
    python bench/decoding_study.py --model smollm2 --equal-length --only "top-k 2" ... --save A.pt
    python bench/decoding_study.py --summarise A.pt B.pt   (merges per-seed runs; plain vs consistent tests)

Claim tested: consistent top-k / nucleus sampling (eos kept in the candidate set) and the
self-terminating (ST / NMST) output layer drive r_L, the fraction of sequences without eos within L
tokens, to 0, where greedy, beam, top-k and nucleus leave it above 0, at a small perplexity cost.
Deterministic strategies run once; sampling ones once per seed (mean ± std over seeds).  Unfinished rows
are classified as loops (a repeat period in their last 200 tokens) or repetitive (a loop, or few distinct
tokens), and each plain sampling row is tested against its consistent variant (Fisher's exact test on the
counts, exact McNemar on the (prompt, seed) pairs).

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
from kexue.nn.self_terminating import log1mexp

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


LOOP_WINDOW = 200  # tokens at the end of an unfinished sequence that the loop detector looks at
LOOP_MAX_PERIOD = 100  # longest repeat period it tries (half the window: two full periods at least)
LOOP_MATCH = 0.9  # share of the window's tokens equal to the token one period back that counts as a loop


def loop_period(tokens: torch.Tensor, window: int = LOOP_WINDOW, max_period: int = LOOP_MAX_PERIOD,
                match: float = LOOP_MATCH) -> int:
    """The shortest period p <= ``max_period`` with which the last ``window`` tokens repeat (at least a
    ``match`` share of them equal the token p before), or 0 if none does (or the sequence is shorter
    than ``window``): a loop detector that separates "a loop" from "a long answer" in unfinished rows."""
    if tokens.numel() < window:
        return 0
    w = tokens[-window:]
    for p in range(1, min(max_period, window // 2) + 1):
        if float((w[p:] == w[:-p]).double().mean()) >= match:
            return p
    return 0


# natural text has many distinct tokens per window: 200-token windows of the Austen test split (SmolLM2's
# tokenizer) hold 104-150 distinct tokens; the unfinished SmolLM2 answers that drift through near-repeats
# ("She smiled again. He smiled again.") hold 4-26, which a fixed-period detector misses
REPETITIVE_MAX_DISTINCT = 50  # at most this many distinct tokens in the last LOOP_WINDOW: repetitive


def distinct_tokens(tokens: torch.Tensor, window: int = LOOP_WINDOW) -> int:
    """The number of distinct tokens in the last ``window`` tokens (0 if the sequence is shorter)."""
    return 0 if tokens.numel() < window else int(tokens[-window:].unique().numel())


def is_repetitive(tokens: torch.Tensor, period: int | None = None) -> bool:
    """Unfinished and degenerate: a loop (loop_period > 0; pass ``period`` when it is known) or few
    distinct tokens (near-repeats)."""
    if period is None:
        period = loop_period(tokens)
    return period > 0 or 0 < distinct_tokens(tokens) <= REPETITIVE_MAX_DISTINCT


def fisher_exact(a: int, n1: int, b: int, n2: int) -> float:
    """Two-sided Fisher's exact test of a/n1 against b/n2 (the hypergeometric tables no likelier than the
    observed one); pure Python so the study needs no scipy."""
    k, n = a + b, n1 + n2

    def prob(x: int) -> float:
        return math.comb(n1, x) * math.comb(n2, k - x) / math.comb(n, k)

    p_obs = prob(a)
    return min(1.0, sum(prob(x) for x in range(max(0, k - n2), min(k, n1) + 1) if prob(x) <= p_obs * (1 + 1e-9)))


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar (sign) test on the discordant pairs of a paired comparison."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, x) for x in range(0, min(only_first, only_second) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def compare_unfinished(plain: dict, consistent: dict) -> dict:
    """Plain against consistent sampling on the same prompts and seeds: unfinished counts, Fisher's exact
    test on the pooled counts, and the exact McNemar test pairing each (prompt, seed)."""
    a = [x for seed in plain["unfinished"] for x in seed]
    b = [x for seed in consistent["unfinished"] for x in seed]
    only_plain = sum(x and not y for x, y in zip(a, b, strict=True))
    only_consistent = sum(y and not x for x, y in zip(a, b, strict=True))
    return dict(plain=sum(a), consistent=sum(b), n=len(a), fisher_p=fisher_exact(sum(a), len(a), sum(b), len(b)),
                only_plain=only_plain, only_consistent=only_consistent,
                mcnemar_p=mcnemar_exact(only_plain, only_consistent))


def shares(row: dict) -> tuple[float, float]:
    """(loop share, repetitive share) of all (seed, prompt) rows of a strategy."""
    periods = [p for seed in row["periods"] for p in seed]
    repetitive = [x for seed in row["repetitive"] for x in seed]
    return sum(p > 0 for p in periods) / max(1, len(periods)), sum(repetitive) / max(1, len(repetitive))


def rl_table(step_fn, prompts, eos: int, strategies, max_len: int, seeds, *, label: str = "",
             reorder_state=select_rows, keep_sequences: bool = False, on_row=None) -> list[dict]:
    """r_L, mean length and the loop share of every strategy (sampling ones: mean ± std over ``seeds``),
    printed as it goes.  Each row also holds, per seed, which prompts did not finish (``unfinished``)
    and the repeat period of each unfinished one (``periods``, 0 = no loop found); with
    ``keep_sequences`` the generated tokens and lengths too.  ``on_row(rows)`` runs after each strategy
    (e.g. to save what is done so far)."""
    print(f"{'strategy':<32} {'r_L':>14} {'loops':>6} {'rep.':>6} {'mean length':>12} {'s':>7} {'CPU s':>7}")
    rows = []
    for name, kw in strategies:
        kw = dict(kw)
        if kw.pop("consistent", False):
            kw["keep"] = eos
        run_seeds = seeds if kw["strategy"] == "sample" else [None]
        r, lengths, unfinished, periods, repetitive, outputs = [], [], [], [], [], []
        t0, cpu0 = time.perf_counter(), time.process_time()
        for seed in run_seeds:
            g = {"generator": torch.Generator().manual_seed(seed)} if seed is not None else {}
            out = generate(step_fn, prompts, eos_id=eos, max_len=max_len, reorder_state=reorder_state, **g, **kw)
            r.append(out.non_termination_ratio())
            lengths.append(float(out.lengths.double().mean()))
            ended = out.terminated.tolist()
            seqs = [out.sequences[i, : out.lengths[i]] for i in range(len(ended))]
            per = [0 if e else loop_period(x) for e, x in zip(ended, seqs, strict=True)]
            unfinished.append([not e for e in ended])
            periods.append(per)
            repetitive.append([not e and is_repetitive(x, p) for e, x, p in zip(ended, seqs, per, strict=True)])
            if keep_sequences:
                outputs.append(dict(seed=seed, sequences=out.sequences, lengths=out.lengths, terminated=out.terminated))
        mean_r = statistics.mean(r)
        std_r = statistics.stdev(r) if len(r) > 1 else 0.0
        full = f"{label} {name}".strip()
        row = dict(strategy=full, name=name, r_L=mean_r, r_L_std=std_r, length=statistics.mean(lengths), n_seeds=len(r),
                   unfinished=unfinished, periods=periods, repetitive=repetitive,
                   wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - cpu0)
        row["loops"], row["repetitive_share"] = shares(row)
        if keep_sequences:
            row["outputs"] = outputs
        rows.append(row)
        if on_row is not None:
            on_row(rows)
        rl = f"{mean_r:.3f} ± {std_r:.3f}" if len(r) > 1 else f"{mean_r:.3f}"
        print(f"{full:<32} {rl:>14} {row['loops']:6.3f} {row['repetitive_share']:6.3f} {row['length']:12.1f} "
              f"{row['wall_s']:7.1f} {row['cpu_s']:7.1f}", flush=True)
    print_comparisons(rows)
    return rows


def print_comparisons(rows: list[dict]) -> list[dict]:
    """Each plain sampling row against its consistent variant (when both ran with the same seeds): the
    tests of compare_unfinished, printed and returned."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for r in rows:
        other = by_name.get("consistent " + r["name"])
        if other is None or r["n_seeds"] != other["n_seeds"]:
            continue
        c = dict(compare_unfinished(r, other), strategy=r["strategy"])
        out.append(c)
        print(f"  {r['name']} -> consistent: unfinished {c['plain']}/{c['n']} -> {c['consistent']}/{c['n']}; "
              f"Fisher p = {c['fisher_p']:.2g}; paired (prompt, seed): {c['only_plain']} only plain, "
              f"{c['only_consistent']} only consistent, McNemar p = {c['mcnemar_p']:.2g}", flush=True)
    return out


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

    def hidden(self, ids, hc=None):
        """(the head's input (B, T, D), (h, c)) for input ids (B, T)."""
        out, hc = self.lstm(self.drop(self.embedding(ids)), hc)
        return self.drop(out), hc

    def log_probs(self, ids, hc=None, st_state=None):
        """(log-probs (B, T, V), (h, c), ST state) for input ids (B, T) continuing the given states."""
        out, hc = self.hidden(ids, hc)
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
    """Adam, gradient clipping at 1, the learning rate decayed linearly to 0 over all epochs; stops after
    ``time_cap_s`` seconds of this process's CPU time (the issue's 30-minute cap per model: CPU time, so
    that a busy shared machine does not cut a training short)."""
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
            if time.process_time() - cpu0 > time_cap_s:
                break
        ppl = perplexity(model, valid)
        print(f"  epoch {epoch + 1}: {steps} steps, valid ppl {ppl:.1f}, {time.perf_counter() - t0:.0f} s", flush=True)
        if time.process_time() - cpu0 > time_cap_s:
            break
    return dict(steps=steps, epochs_run=epoch + 1, wall_s=time.perf_counter() - t0,
                cpu_s=time.process_time() - cpu0, valid_ppl=ppl)


@torch.no_grad()
def eos_diagnostics(model: WordLSTM, seqs: list[list[int]], batch_size: int = 64) -> dict:
    """Where a model's test NLL goes, and what its eos logit u = z[eos] = u_eosᵀh + b_eos does.

    Every model (softmax, ST, NMST) factors log p_v = log(1 − p_eos) + log softmax_{V∖{eos}}(z)_v for a word
    v, so the per-token NLL splits exactly into a *termination* part (−log(1 − p_eos) before a word,
    −log p_eos at the sentence end) and a *word* part (−log softmax_{V∖{eos}}(z)_v), and test perplexity =
    exp(termination) · exp(word).  ``monotone_term_factor``: the termination factor of the running maximum
    of the model's own p_eos along each sentence (equal to ``term_factor`` for ST, whose p_eos never
    falls): the price of monotonicity alone, given this model's eos knowledge.  Also: mean p_eos and the
    mean and spread of u before a word ("go on") and at the end ("stop"): a softmax head wants u low when
    going on, ST wants σ(u) ≈ 1 (u high)."""
    model.eval()
    acc = collections.defaultdict(float)
    u_go, u_stop = [], []
    for inp, tgt in batches(seqs, batch_size, None):
        h, _ = model.hidden(inp)
        z = model.lm_head(h).float()
        logp = (model.st(h) if model.st is not None else torch.log_softmax(z, -1))
        mask, stop = tgt != 0, tgt == 1
        go = mask & ~stop
        lp_eos = logp[..., 1]
        lp_go = log1mexp(lp_eos)
        word = z.index_fill(-1, torch.tensor([1]), float("-inf")).log_softmax(-1).gather(-1, tgt[..., None])[..., 0]
        acc["term"] += float(-lp_go[go].sum() - lp_eos[stop].sum())
        # the same model's eos probabilities made monotone along the sentence (running max): what a head
        # whose p_eos can only grow (ST) pays for termination if it knew what this model knows
        env = torch.cummax(torch.where(mask, lp_eos, float("-inf")), dim=1).values
        acc["term_env"] += float(-log1mexp(env)[go].sum() - env[stop].sum())
        acc["word"] += float(-word[go].sum())
        acc["n"] += int(mask.sum())
        acc["p_eos_go"] += float(lp_eos[go].exp().sum())
        acc["n_go"] += int(go.sum())
        acc["p_eos_stop"] += float(lp_eos[stop].exp().sum())
        acc["n_stop"] += int(stop.sum())
        u = z[..., 1]
        u_go.append(u[go])
        u_stop.append(u[stop])
    u_go, u_stop = torch.cat(u_go), torch.cat(u_stop)
    n = acc["n"]
    return dict(ppl=math.exp((acc["term"] + acc["word"]) / n), term_factor=math.exp(acc["term"] / n),
                monotone_term_factor=math.exp(acc["term_env"] / n),
                word_factor=math.exp(acc["word"] / n), p_eos_go=acc["p_eos_go"] / acc["n_go"],
                p_eos_stop=acc["p_eos_stop"] / acc["n_stop"], u_go=float(u_go.mean()), u_go_std=float(u_go.std()),
                u_stop=float(u_stop.mean()), u_stop_std=float(u_stop.std()),
                b_eos=float(model.lm_head.bias[1]) if model.lm_head.bias is not None else 0.0,
                u_eos_norm=float(model.lm_head.weight[1].norm()),
                mean_word_norm=float(model.lm_head.weight[3:].norm(dim=1).mean()))


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
    models = [m for m in AUSTEN_MODELS[: 2 if args.quick else None] if args.models is None or m[0] in args.models]
    rows = []
    for seed in args.train_seeds:
        for name, mode, eps in models:
            torch.manual_seed(seed)
            model = WordLSTM(len(vocab), args.dim, mode, eps, args.dropout)
            key = (f"austen-{name.replace(' ', '_')}-v{len(vocab)}-d{args.dim}-e{args.epochs}-b{args.batch_size}"
                   f"-s{seed}.pt")
            path = cache / key
            if path.exists() and not args.quick and not args.retrain:
                saved = torch.load(path, weights_only=False)
                model.load_state_dict(saved["state"])
                info = saved["info"]
                print(f"{name} (training seed {seed}): loaded {path}")
            else:
                print(f"{name} (training seed {seed}): training ({args.epochs} epochs max, {args.time_cap:.0f} s cap)",
                      flush=True)
                info = train_lm(model, train, valid, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                seed=seed, time_cap_s=args.time_cap)
                if not args.quick:
                    torch.save({"state": model.state_dict(), "info": info}, path)
            model.eval()
            ppl = perplexity(model, test)
            diag = eos_diagnostics(model, test)
            print(f"{name} (training seed {seed}): test perplexity {ppl:.2f} = termination x{diag['term_factor']:.4f}"
                  f" · words {diag['word_factor']:.2f} (valid {info['valid_ppl']:.2f}; {info['steps']} steps, "
                  f"{info['wall_s'] / 60:.1f} min wall, {info['cpu_s'] / 60:.1f} CPU-min)", flush=True)
            print(f"  termination x{diag['term_factor']:.4f}; made monotone (running max of p_eos) "
                  f"x{diag['monotone_term_factor']:.4f}", flush=True)
            print(f"  eos: p_eos {diag['p_eos_go']:.4f} before a word, {diag['p_eos_stop']:.3f} at the end; "
                  f"u = z[eos] {diag['u_go']:.2f} ± {diag['u_go_std']:.2f} before a word, {diag['u_stop']:.2f} ± "
                  f"{diag['u_stop_std']:.2f} at the end; b_eos {diag['b_eos']:.2f}, |u_eos| {diag['u_eos_norm']:.2f} "
                  f"(mean word row {diag['mean_word_norm']:.2f})", flush=True)
            base = dict(model=name, train_seed=seed, test_ppl=ppl, **{k: info[k] for k in ("steps", "cpu_s", "wall_s")},
                        **{f"diag_{k}": v for k, v in diag.items()})
            rows.append(dict(base, kind="model"))
            if args.decode == "none":
                continue
            strategies = STRATEGIES if mode is None else ST_STRATEGIES
            if args.decode == "deterministic":
                strategies = [st for st in strategies if st[1]["strategy"] != "sample"]
            print(f"{name}: {len(prompts)} prompts, L = {args.max_len}, seeds {args.seeds}")
            for row in rl_table(lstm_step_fn(model), prompts, 1, strategies, args.max_len, args.seeds, label=name):
                rows.append(dict(row, kind="decode", **base))
    print_perplexity_summary([r for r in rows if r["kind"] == "model"])
    return rows


def print_perplexity_summary(models: list[dict]) -> None:
    """Test perplexity per model: mean ± std over training seeds, and × baseline paired by training seed."""
    base = {r["train_seed"]: r["test_ppl"] for r in models if r["model"] == "baseline"}
    print(f"{'model':<12} {'seeds':>8} {'test ppl':>16} {'x baseline (paired)':>22} {'termination x':>14}")
    for name in dict.fromkeys(r["model"] for r in models):
        rs = [r for r in models if r["model"] == name]
        ppl = [r["test_ppl"] for r in rs]
        ratio = [r["test_ppl"] / base[r["train_seed"]] for r in rs if r["train_seed"] in base]
        term = [r["diag_term_factor"] for r in rs]

        def ms(x, f):
            return (f"{statistics.mean(x):{f}} ± {statistics.stdev(x):{f}}" if len(x) > 1
                    else f"{x[0]:{f}}" if x else "-")
        seeds = ",".join(str(r["train_seed"]) for r in rs)
        print(f"{name:<12} {seeds:>8} {ms(ppl, '.1f'):>16} {ms(ratio, '.3f'):>22} {ms(term, '.3f'):>14}", flush=True)


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
    chats = []
    for s in sentences:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        if len(ids) > args.prompt_tokens + 4:
            text = tok.decode(ids[: args.prompt_tokens])
            msgs = [{"role": "user", "content": f"Continue this passage: {text}"}]
            enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt")
            chats.append((enc if isinstance(enc, torch.Tensor) else enc["input_ids"])[0])
    if args.equal_length:  # one prompt length: the prompts run as one batch (the decoder groups by length)
        modal = collections.Counter(p.numel() for p in chats).most_common(1)[0][0]
        chats = [p for p in chats if p.numel() == modal]
    prompts = chats[:: max(1, len(chats) // args.prompts)][: args.prompts]
    lengths = collections.Counter(p.numel() for p in prompts)
    print(f"SmolLM2-135M-Instruct (GGUF Q4_1), {len(prompts)} prompts (token lengths {dict(lengths)}), "
          f"eos <|im_end|> = {eos}, L = {args.max_len}, seeds {args.seeds}")
    named = dict(STRATEGIES)
    strategies = [(n, named[n]) for n in args.only] if args.only else [(n, kw) for n, kw in STRATEGIES
                                                                        if n not in args.skip]

    def save(rows):
        if args.save is not None:
            torch.save({"args": vars(args), "rows": rows}, args.save)

    rows = rl_table(smollm2_step_fn(model), prompts, eos, strategies, args.max_len, args.seeds,
                    reorder_state=reorder_cache, keep_sequences=args.save is not None, on_row=save)
    show_examples(rows, tok)
    return rows


def show_examples(rows: list[dict], tok, n_chars: int = 240) -> None:
    """For each strategy, the end of one looping and one non-looping unfinished answer (decoded)."""
    for r in rows:
        if "outputs" not in r:
            return
        out, per = r["outputs"][0], r["periods"][0]
        for kind, pick in (("loop", lambda p: p > 0), ("no loop", lambda p: p == 0)):
            i = next((i for i, u in enumerate(r["unfinished"][0]) if u and pick(per[i])), None)
            if i is not None:
                text = tok.decode(out["sequences"][i, : out["lengths"][i]])
                tail = text[-n_chars:].replace("\n", " / ")
                print(f"  [{r['strategy']}, {kind}{f', period {per[i]}' if per[i] else ''}] ...{tail}")


def merge_rows(files_rows: list[list[dict]]) -> list[dict]:
    """Rows of the same strategies from runs with disjoint seeds, merged (seed lists concatenated; a
    deterministic strategy is kept from its first run)."""
    merged: dict[str, dict] = {}
    for rows in files_rows:
        for r in rows:
            m = merged.get(r["strategy"])
            if m is None:
                merged[r["strategy"]] = dict(r, r_list=[sum(u) / len(u) for u in r["unfinished"]],
                                             len_list=[r["length"]] * r["n_seeds"])
            elif r["n_seeds"] and m["r_list"] and _is_sampling(r):
                m["unfinished"] = m["unfinished"] + r["unfinished"]
                m["periods"] = m["periods"] + r["periods"]
                m["repetitive"] = m["repetitive"] + r["repetitive"]
                m["r_list"] += [sum(u) / len(u) for u in r["unfinished"]]
                m["len_list"] += [r["length"]] * r["n_seeds"]
                m["n_seeds"] += r["n_seeds"]
                m["wall_s"] += r["wall_s"]
                m["cpu_s"] += r["cpu_s"]
    out = []
    for m in merged.values():
        m["r_L"] = statistics.mean(m["r_list"])
        m["r_L_std"] = statistics.stdev(m["r_list"]) if len(m["r_list"]) > 1 else 0.0
        m["length"] = statistics.mean(m["len_list"])
        m["loops"], m["repetitive_share"] = shares(m)
        out.append(m)
    return out


def _is_sampling(row: dict) -> bool:
    return dict(STRATEGIES).get(row.get("name"), {}).get("strategy") == "sample"


def summarise(paths: list[str]) -> list[dict]:
    """The table of saved runs (``--save``): r_L ± std over seeds, the loop share, mean length, CPU time;
    then plain against consistent sampling (Fisher / McNemar)."""
    runs = [torch.load(p, weights_only=False)["rows"] for p in paths]
    for rows in runs:  # files saved before ``repetitive`` existed: recompute it from the sequences
        for r in rows:
            if "repetitive" not in r and "outputs" in r:
                r["repetitive"] = [[bool(u) and is_repetitive(o["sequences"][i, : o["lengths"][i]])
                                    for i, u in enumerate(unf)] for o, unf in zip(r["outputs"], r["unfinished"],
                                                                                   strict=True)]
    rows = merge_rows(runs)
    print(f"{'strategy':<28} {'seeds':>5} {'r_L':>14} {'loops':>6} {'repetitive':>10} {'other':>6} "
          f"{'mean length':>12} {'CPU s':>7}")
    for r in rows:
        rl = f"{r['r_L']:.3f} ± {r['r_L_std']:.3f}" if r["n_seeds"] > 1 else f"{r['r_L']:.3f}"
        print(f"{r['strategy']:<28} {r['n_seeds']:>5} {rl:>14} {r['loops']:6.3f} {r['repetitive_share']:10.3f} "
              f"{max(r['r_L'] - r['repetitive_share'], 0.0):6.3f} {r['length']:12.1f} {r['cpu_s']:7.0f}")
    print_comparisons(rows)
    return rows


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
    g.add_argument("--time-cap", type=float, default=30 * 60, help="training CPU seconds per model (the issue's cap)")
    g.add_argument("--dim", type=int, default=128)
    g.add_argument("--min-count", type=int, default=5)
    g.add_argument("--max-words", type=int, default=80, help="longer training sentences are dropped")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    g.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                   help='a subset of the LSTMs, e.g. --models baseline "ST 1e-4" (default: all five)')
    g.add_argument("--decode", choices=("all", "deterministic", "none"), default="all",
                   help="which r_L tables to decode (deterministic: greedy and beam only)")
    g.add_argument("--prompt-words", type=int, default=10)
    g.add_argument("--retrain", action="store_true", help="ignore cached checkpoints")
    g = ap.add_argument_group("smollm2")
    g.add_argument("--prompt-tokens", type=int, default=12)
    g.add_argument("--equal-length", action="store_true",
                   help="only prompts of the most common token length (one batch: faster on the CPU)")
    g.add_argument("--skip", nargs="+", default=[], metavar="STRATEGY", help='e.g. --skip "beam 4"')
    g.add_argument("--only", nargs="+", default=None, metavar="STRATEGY", choices=[n for n, _ in STRATEGIES],
                   help="run just these strategies, in this order")
    ap.add_argument("--summarise", nargs="+", default=None, metavar="FILE",
                    help="print the merged table (and plain-vs-consistent tests) of --save files of one model "
                         "with disjoint seeds, and exit")
    ap.add_argument("--save", default=None, help="torch.save the rows (sequences included for smollm2) here")
    args = ap.parse_args(argv)
    if args.summarise:
        return summarise(args.summarise)
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
    t0, cpu0 = time.perf_counter(), time.process_time()
    rows = study(args)
    print(f"total: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - cpu0:.0f} s CPU (this process)")
    if args.save is not None:
        torch.save({"args": vars(args), "rows": rows}, args.save)
        print(f"saved {args.save}")
    return rows


if __name__ == "__main__":
    main()
