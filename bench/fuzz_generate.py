"""``--op generate`` of bench/fuzz_ops.py: kexue.decoding.generate against independent oracles.

Each seed draws one of four modes (the backend is kexue.sample's):

* ``toy`` (greedy or sample): a tiny random recurrent model, h_t = a·h_{t−1} + E[y_t],
  logits = s·(tanh(h_t) W + b) (optionally rounded to integers: exact ties; optionally some tokens
  masked to −inf, eos among them: a model that never stops; float32 or float64 logits), run by
  generate with its kv-cache step function (the state h, selected by generate as rows finish) on
  prompts of different lengths (1-7), B 1-6, max_len 1-12.  The oracle decodes every prompt
  ALONE, recomputing the logits from the whole history at each step, in generate's documented
  order (prompts grouped by length in order of first appearance; one uniform per live row per
  step from the generator, in row order), the token drawn by the same kernel on that row alone
  with that row's own temperature / top_k / top_p ((B,) tensors) and keep = eos.  Tokens,
  lengths, terminated and scores (Σ log-softmax, float64) must agree: this is batch invariance,
  per-row parameters following their rows, and kv-cache == full recomputation at once.  A token
  may differ only at an exact-arithmetic near-tie (greedy: the two best logits within 1e-5 of
  each other) or at a CDF boundary (sample: u within 1e-5 of it): counted, not failed.
* ``beam``: the toy model with V 2-4, max_len 1-4 and beam_size >= V^max_len (the beam holds every
  hypothesis), against an exhaustive search over all continuations (a hypothesis ends at eos or at
  max_len; score = Σ log-softmax): the returned score must be the optimum (1e-9) and the returned
  tokens must score it (ties: any optimum).  With a smaller beam the returned tokens must still
  score what generate says.
* ``hf``: a tiny random GPT2LMHeadModel (seeded, 1-2 layers, V 20-60, weights scaled so logits are
  decisive): greedy generate with a KV-cache step function == HF ``generate(do_sample=False)``
  token for token on the same prompts left-padded with an attention mask (HF derives the
  positions from it), eos early (an id the model emits) or never.  A difference at a near-tie
  (top-2 logits within 1e-4) is counted, not failed.
* ``st``: the toy model behind a :class:`kexue.nn.SelfTerminatingHead` (ST or NMST, ε 0.02-0.5):
  every step's p(eos) >= 1 − (1 − ε)^n (n = positions seen, context 0), rows normalised, step ==
  forward on the whole sequence, and greedy stops by the first n where the bound passes 1/2.
"""

from __future__ import annotations

import collections
import math
import random

import torch

from kexue.decoding import api, generate
from kexue.integrations.hf_decoding import _cache_kw
from kexue.nn import SelfTerminatingHead

# near-ties and boundaries, over the whole run (printed by fuzz_ops)
COUNTS: collections.Counter[str] = collections.Counter()
NEAR = 1e-5  # a logit gap / CDF distance this small may round either way between batched and alone


class Toy:
    """h_t = a·h_{t−1} + E[y_t]; logits = s·(tanh(h_t) W + b), masked ids −inf, optionally rounded."""

    def __init__(self, rng: random.Random, V: int, dtype: torch.dtype, masked: list[int], rounded: bool):
        D = rng.randint(1, 8)
        self.V, self.dtype, self.masked, self.rounded = V, dtype, masked, rounded
        self.E = torch.randn(V, D, dtype=torch.float64)
        self.W = torch.randn(D, V, dtype=torch.float64)
        self.b = torch.randn(V, dtype=torch.float64)
        self.a = rng.uniform(0, 0.9)
        self.s = rng.choice([0.3, 1.0, 3.0, 10.0])

    def _logits(self, h):
        z = self.s * ((torch.tanh(h)[:, :, None] * self.W[None]).sum(1) + self.b)
        if self.rounded:
            z = z.round()
        if self.masked:
            z[:, self.masked] = float("-inf")
        return z.to(self.dtype)

    def step(self, ids, h):
        if h is None:
            h = torch.zeros(ids.shape[0], self.E.shape[1], dtype=torch.float64)
        for j in range(ids.shape[1]):
            h = self.a * h + self.E[ids[:, j]]
        return self._logits(h), h

    def full(self, history: torch.Tensor) -> torch.Tensor:
        """(V,) logits after the whole 1-D history, recomputed from scratch for this row alone."""
        return self.step(history[None], None)[0][0]


def _prompts(rng, B, V, eos):
    return [torch.tensor([rng.randrange(V) for _ in range(rng.randint(1, 7))], dtype=torch.int64) for _ in range(B)]


def _groups(prompts):
    g: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        g.setdefault(p.numel(), []).append(i)
    return list(g.values())


def oracle(model: Toy, prompts, strategy, max_len, eos, pad, params, seed, backend):
    """Each prompt alone, full recomputation, generate's documented order of uniforms."""
    B = len(prompts)
    seqs = torch.full((B, max_len), pad, dtype=torch.int64)
    lengths = torch.full((B,), max_len, dtype=torch.int64)
    term = torch.zeros(B, dtype=torch.bool)
    scores = torch.zeros(B, dtype=torch.float64)
    near = torch.zeros(B, max_len, dtype=torch.bool)  # a step decided at a near-tie / CDF boundary
    gen = torch.Generator().manual_seed(seed)
    for idx in _groups(prompts):
        hist = {r: prompts[r].clone() for r in idx}
        active = list(idx)
        for t in range(max_len):
            if not active:
                break
            u = torch.rand(len(active), dtype=torch.float64, generator=gen) if strategy == "sample" else None
            finished = []
            for j, r in enumerate(active):
                z = model.full(hist[r])
                if strategy == "greedy":
                    tok = int(z.argmax())
                    top = z.double().topk(min(2, z.numel())).values
                    near[r, t] = top.numel() > 1 and bool(torch.isfinite(top).all()) and float(top[0] - top[1]) < NEAR \
                        and float(top[0] - top[1]) > 0
                else:
                    T, k, p = (params[n][r:r + 1] for n in ("temperature", "top_k", "top_p"))
                    name, (T_, k_, p_, E_) = api._prepare(z[None], T, k, p, eos, backend)
                    tok = int(api.BACKENDS.impls[name](z[None], T_, k_, p_, E_, u[j:j + 1])[0])
                    q = api.PROBS_IMPLS[name](z[None], T_, k_, p_, E_)[0].double()
                    cdf = q.cumsum(0) / q.sum()
                    near[r, t] = bool(((cdf - float(u[j])).abs() < NEAR).any())
                logp = torch.log_softmax(z.double(), dim=0)
                seqs[r, t] = tok
                scores[r] += logp[tok]
                hist[r] = torch.cat([hist[r], torch.tensor([tok])])
                if tok == eos:
                    lengths[r], term[r] = t + 1, True
                    finished.append(r)
            active = [r for r in active if r not in finished]
    return seqs, lengths, term, scores, near


def _compare(name, got, want, near, msgs) -> None:
    seqs, lengths, term, scores = want
    for r in range(seqs.shape[0]):
        diff = (got.sequences[r] != seqs[r]).nonzero()
        if diff.numel():
            t = int(diff[0, 0])
            if bool(near[r, t]):
                COUNTS[f"{name}_near_tie"] += 1
                continue
            msgs.append(f"{name} row {r}: token {t} is {int(got.sequences[r, t])}, alone {int(seqs[r, t])} "
                        f"({got.sequences[r].tolist()} vs {seqs[r].tolist()})")
            continue
        if int(got.lengths[r]) != int(lengths[r]) or bool(got.terminated[r]) != bool(term[r]):
            msgs.append(f"{name} row {r}: length/terminated {int(got.lengths[r])}/{bool(got.terminated[r])}, "
                        f"alone {int(lengths[r])}/{bool(term[r])}")
        elif not abs(float(got.scores[r]) - float(scores[r])) <= 1e-6 * (1 + abs(float(scores[r]))):
            msgs.append(f"{name} row {r}: score {float(got.scores[r])!r}, alone {float(scores[r])!r}")


def fuzz_toy(rng, seed, backend, msgs, cfg) -> None:
    V = rng.choice([1, 2, 3, rng.randint(2, 40)])
    eos = rng.randrange(V)
    masked = []
    if V > 2 and rng.random() < 0.3:
        masked = rng.sample([i for i in range(V)], rng.randint(1, V - 1))
        if rng.random() < 0.5 and eos not in masked:
            masked.append(eos)  # eos never
        if len(set(masked)) == V:
            masked = masked[1:]
    model = Toy(rng, V, rng.choice([torch.float32, torch.float64]), masked, rng.random() < 0.3)
    B = rng.randint(1, 6)
    prompts = _prompts(rng, B, V, eos)
    strategy = rng.choice(["greedy", "sample", "sample"])
    max_len = rng.choice([1, 2, rng.randint(1, 12)])
    pad = rng.choice([None, V])
    params = {}
    kw = {}
    if strategy == "sample":
        params = dict(temperature=torch.tensor([rng.choice([0.3, 1.0, 2.0, 50.0]) for _ in range(B)],
                                               dtype=torch.float64),
                      top_k=torch.tensor([rng.choice([1, 2, V, V + 3]) for _ in range(B)]),
                      top_p=torch.tensor([rng.choice([0.05, 0.5, 0.9, 1.0]) for _ in range(B)], dtype=torch.float64))
        kw = dict(params, keep=eos, backend=backend)
    cfg.update(mode="toy", V=V, eos=eos, masked=masked, dtype=model.dtype, rounded=model.rounded, B=B,
               lens=[p.numel() for p in prompts], strategy=strategy, max_len=max_len, pad=pad)
    got = generate(model.step, prompts, strategy=strategy, max_len=max_len, eos_id=eos, pad_id=pad,
                   generator=torch.Generator().manual_seed(seed), **kw)
    want = oracle(model, prompts, strategy, max_len, eos, eos if pad is None else pad, params, seed, backend)
    _compare(strategy, got, want[:4], want[4], msgs)


def _exhaustive(model: Toy, prompt, max_len, eos):
    """(best score, [token lists scoring it]) over every hypothesis (ends at eos or at max_len)."""
    best, arg = -math.inf, []

    def walk(hist, toks, score):
        nonlocal best, arg
        if toks and (toks[-1] == eos or len(toks) == max_len):
            if score > best + 1e-12:
                best, arg = score, [toks]
            elif abs(score - best) <= 1e-12:
                arg.append(toks)
            return
        logp = torch.log_softmax(model.full(hist).double(), dim=0)
        for v in range(model.V):
            if logp[v] > -math.inf:
                walk(torch.cat([hist, torch.tensor([v])]), toks + [v], score + float(logp[v]))

    walk(prompt, [], 0.0)
    return best, arg


def _score_of(model: Toy, prompt, toks):
    s, hist = 0.0, prompt
    for v in toks:
        s += float(torch.log_softmax(model.full(hist).double(), dim=0)[v])
        hist = torch.cat([hist, torch.tensor([v])])
    return s


def fuzz_beam(rng, seed, backend, msgs, cfg) -> None:
    V = rng.randint(2, 4)
    eos = rng.randrange(V)
    max_len = rng.randint(1, 4)
    model = Toy(rng, V, torch.float64, [], rng.random() < 0.3)
    B = rng.randint(1, 4)
    prompts = _prompts(rng, B, V, eos)
    full = rng.random() < 0.7
    beam = V**max_len if full else rng.randint(1, 3)
    cfg.update(mode="beam", V=V, eos=eos, max_len=max_len, B=B, lens=[p.numel() for p in prompts], beam=beam,
               rounded=model.rounded)
    out = generate(model.step, prompts, strategy="beam", beam_size=beam, max_len=max_len, eos_id=eos)
    for r in range(B):
        n = int(out.lengths[r])
        toks = out.sequences[r, :n].tolist()
        own = _score_of(model, prompts[r], toks)
        if not abs(own - float(out.scores[r])) <= 1e-9 * (1 + abs(own)):
            msgs.append(f"beam row {r}: reported score {float(out.scores[r])!r}, its tokens {toks} score {own!r}")
        if bool(out.terminated[r]) != (bool(toks) and toks[-1] == eos):
            msgs.append(f"beam row {r}: terminated {bool(out.terminated[r])} for tokens {toks}")
        if full:
            best, args = _exhaustive(model, prompts[r], max_len, eos)
            if not abs(own - best) <= 1e-9 * (1 + abs(best)):
                msgs.append(f"beam row {r}: {toks} scores {own!r}, the optimum {best!r} ({args[:2]})")


def _hf_model(rng):
    import transformers

    V = rng.randint(20, 60)
    cfg = transformers.GPT2Config(n_layer=rng.randint(1, 2), n_embd=16, n_head=2, vocab_size=V, n_positions=32,
                                  initializer_range=0.3, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=V - 1)
    transformers.logging.set_verbosity_error()
    return transformers.GPT2LMHeadModel(cfg).eval(), V


def fuzz_hf(rng, seed, backend, msgs, cfg) -> None:
    model, V = _hf_model(rng)
    B = rng.randint(1, 4)
    prompts = [torch.tensor([rng.randrange(V) for _ in range(rng.randint(1, 6))]) for _ in range(B)]
    max_len = rng.choice([1, 2, rng.randint(1, 8)])
    P = max(p.numel() for p in prompts)
    pad = V - 1
    ids = torch.full((B, P), pad, dtype=torch.int64)
    att = torch.zeros(B, P, dtype=torch.int64)
    for r, p in enumerate(prompts):
        ids[r, P - p.numel():], att[r, P - p.numel():] = p, 1
    with torch.no_grad():
        first = model(ids[:1, P - prompts[0].numel():]).logits[0, -1]
    early = rng.random() < 0.6
    eos = int(first.argmax()) if early else int(first.argmin())  # (argmin: rarely or never emitted)
    cfg.update(mode="hf", V=V, B=B, lens=[p.numel() for p in prompts], max_len=max_len, eos=eos, early=early)

    cache_kw = _cache_kw(model)

    def step(x, cache):
        out = model(x, use_cache=True, **{cache_kw: cache})
        return out.logits[:, -1].float(), getattr(out, "cache", None) if cache_kw == "cache" else out.past_key_values

    def reorder(cache, index):
        cache.reorder_cache(index)
        return cache

    with torch.no_grad():
        got = generate(step, prompts, max_len=max_len, eos_id=eos, pad_id=pad, reorder_state=reorder)
        hf = model.generate(ids, attention_mask=att, do_sample=False, max_new_tokens=max_len, min_new_tokens=0,
                            eos_token_id=eos, pad_token_id=pad, output_scores=True, return_dict_in_generate=True)
    new = hf.sequences[:, P:]
    want = torch.full((B, max_len), pad, dtype=torch.int64)
    want[:, : new.shape[1]] = new
    for r in range(B):
        diff = (got.sequences[r] != want[r]).nonzero()
        if not diff.numel():
            continue
        t = int(diff[0, 0])
        top = hf.scores[t][r].double().topk(2).values if t < len(hf.scores) else None
        if top is not None and float(top[0] - top[1]) < 1e-4:
            COUNTS["hf_near_tie"] += 1
            continue
        msgs.append(f"hf row {r}: token {t}: kexue {got.sequences[r].tolist()} vs HF {want[r].tolist()}")


def fuzz_st(rng, seed, backend, msgs, cfg) -> None:
    V = rng.randint(2, 30)
    eos = rng.randrange(V)
    eps = rng.choice([0.02, 0.1, 0.3, 0.5])
    mode = rng.choice(["st", "nmst"])
    toy = Toy(rng, V, torch.float64, [], False)
    D = toy.E.shape[1]
    lin = torch.nn.Linear(D, V).double()
    head = SelfTerminatingHead(lin, eos, eps=eps, mode=mode)
    B = rng.randint(1, 5)
    prompts = [torch.tensor([rng.randrange(V) for _ in range(rng.randint(1, 5))]) for _ in range(B)]
    n_half = math.ceil(math.log(2) / -math.log1p(-eps)) + 1
    max_len = n_half + 8
    cfg.update(mode="st", V=V, eos=eos, eps=eps, st_mode=mode, B=B, lens=[p.numel() for p in prompts])
    seen = []

    def step(x, state):
        h, st = state if state is not None else (None, None)
        if h is None:
            h = torch.zeros(x.shape[0], D, dtype=torch.float64)
        hs = []
        for j in range(x.shape[1]):
            h = toy.a * h + toy.E[x[:, j]]
            hs.append(torch.tanh(h))
        logp, st2 = head(torch.stack(hs, 1), st, return_state=True)
        seen.append((logp[:, -1].detach(), st2.t.clone()))
        return logp[:, -1].detach(), (h, st2)

    with torch.no_grad():
        out = generate(step, prompts, max_len=max_len, eos_id=eos)
        for logp, t in seen:
            bound = head.eos_lower_bound(t.double())  # n = positions seen (context 0)
            if not bool((logp[:, eos].exp() >= bound * (1 - 1e-9) - 1e-15).all()):
                msgs.append(f"st: p(eos) {logp[:, eos].exp().tolist()} below the bound {bound.tolist()} "
                            f"at t {t.tolist()}")
                break
            if not bool(((logp.logsumexp(-1)).abs() < 1e-9).all()):
                msgs.append("st: log-probabilities do not sum to 1")
                break
        for r in range(B):
            if not bool(out.terminated[r]) or int(out.lengths[r]) > n_half:
                msgs.append(f"st row {r}: greedy ran {int(out.lengths[r])} tokens (terminated "
                            f"{bool(out.terminated[r])}); the bound passes 1/2 by {n_half}")
            hs, h = [], torch.zeros(1, D, dtype=torch.float64)
            for v in torch.cat([prompts[r], out.sequences[r, : int(out.lengths[r])]]).tolist():
                h = toy.a * h + toy.E[torch.tensor([v])]
                hs.append(torch.tanh(h))
            H = torch.stack(hs, 1)
            whole = head(H)[0]  # forward on the whole sequence
            st = None
            for j in range(H.shape[1]):
                lp, st = head.step(H[:, j], st)
                if not torch.allclose(lp[0], whole[j], atol=1e-9, rtol=0):
                    msgs.append(f"st row {r}: step {j} differs from forward on the whole sequence")
                    break


MODES = {"toy": fuzz_toy, "beam": fuzz_beam, "hf": fuzz_hf, "st": fuzz_st}


def fuzz_generate(seed: int, backend: str, device: str) -> tuple[list[str], dict]:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    mode = rng.choice(["toy", "toy", "toy", "beam", "beam", "hf", "st"])
    msgs: list[str] = []
    cfg: dict = {}
    MODES[mode](rng, seed, backend, msgs, cfg)
    return msgs, cfg


def mutate(rel: float) -> None:
    """generate with the per-row sampling parameters reversed (rows swapped): reported."""
    import sys

    g = sys.modules["kexue.decoding.generate"]  # (the package's name "generate" is the function)
    right = g._rows_of

    def off(sample_kw, names, rows):
        return right(sample_kw, names, rows.flip(0))

    g._rows_of = off
