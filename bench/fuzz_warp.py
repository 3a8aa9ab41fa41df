"""``--op warp`` of bench/fuzz_ops.py: kexue's Hugging Face warpers (ConsistentTopKLogitsWarper,
ConsistentTopPLogitsWarper; kexue offers no temperature or min-p warper, so transformers'
TemperatureLogitsWarper joins the chains) against a float64 definition written here from their
docstrings, against transformers' own TopK / TopP warpers, and against kexue.decoding.sampling_probs.

A configuration is a batch (B 1-6, V 1-300, float32/float16/bfloat16) of scores with the awkward
values (integer or half-rounded scores: ties; signed zeros; -inf masked entries, whole -inf rows;
scales 1e-3 .. 1e4) and a chain of 1-3 warpers in random order (temperature 1e-3 .. 1e30, top_k
1 .. > V, top_p tiny .. 1.0, min_tokens_to_keep, one or several eos ids, a finite filter_value).
Each warper of the chain is judged on the scores it was actually given (the previous one's output):

* every warper: same shape and dtype; a token it keeps has its input score bit for bit (the sign
  of a zero included), a token it drops has ``filter_value`` (in the dtype), an eos id has its
  input score;
* top-k (definition: θ = the k-th largest score, k = min(max(top_k, min_tokens_to_keep), V); drop
  s < θ; ties with θ kept): exact, and bit for bit equal to transformers' TopKLogitsWarper with
  the eos scores put back;
* top-p (definition: q = softmax(s) in float64; τ = the largest level whose mass {q >= τ} reaches
  p, lowered to the min_tokens_to_keep-th largest q; keep q >= τ; p >= 1: the scores unchanged):
  the warper's softmax and prefix sums are float32, so the kept non-eos set K must satisfy
  K(p − δ) ⊆ K ⊆ K(p + δ) (the float64 kept sets at p ∓ δ, δ = (V + 16)·2⁻²² bounds the float32
  error of any prefix mass), tokens of equal score decided together, no dropped token above a
  kept one.  Scores with +inf or NaN (a tiny temperature's overflow) are outside the definition:
  counted as ``skipped_nonfinite``, not judged;
* against transformers' TopPLogitsWarper (+ eos put back): a difference is *definitional* when it
  comes from a documented choice: ties at the crossing or at the min_tokens_to_keep-th token
  (every differing token has an equal score that HF decided the other way: kexue keeps every tied
  token, HF's result depends on its sort), 16-bit scores (HF's softmax runs in the 16-bit dtype,
  kexue's in float32), or a token within δ of the boundary (HF's ascending cumsum <= 1 − p vs the
  descending one < p round apart).  Any other difference is a failure;
* the chain temperature → top-k → top-p on a = the temperature warper's output: softmax(chain(a))
  must equal sampling_probs(a, top_k, top_p, keep=eos) (backend = the campaign's backend) on the
  same kept set (up to tokens within δ of top-p's boundary) and in value (float32 rule: |Δq| <=
  1e-6 + (8 |a_i − max a| + 4V) u q).  When both top-k and top-p are on and an eos id lies
  outside the top-k set the two differ by definition (kexue.decoding.warpers' docstring): not
  compared, counted as ``definitional_eos_outside_topk``.

Bad arguments (top_k 0, top_p 0 or > 1, eos out of range) must raise a ValueError.
"""

from __future__ import annotations

import collections
import random

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

import kexue
from kexue.decoding import warpers as kw

U32 = 2.0**-24
UNDERFLOW_Q = 1e-30  # probabilities below this are not judged (float32 weights underflow), as in fuzz_sample
DTYPES = [torch.float32, torch.float32, torch.float16, torch.bfloat16]
TEMPERATURES = [1e-3, 0.05, 0.7, 0.7, 1.0, 1.0, 1.0, 1.7, 1.7, 100.0, 1e6, 1e30]
# definitional differences and skips, over the whole run (printed by fuzz_ops)
COUNTS: collections.Counter[str] = collections.Counter()


def _scores(c: dict, rng: random.Random) -> torch.Tensor:
    B, V = c["B"], c["V"]
    x = torch.randn(B, V, dtype=torch.float64) * c["scale"]
    if c["kind"] == "int":
        x = x.round()
    elif c["kind"] == "half":
        x = (x * 2).round() / 2
    elif c["kind"] == "few":  # a handful of distinct values: many ties
        x = torch.tensor([rng.uniform(-3, 3) for _ in range(3)], dtype=torch.float64)[torch.randint(0, 3, (B, V))]
    if c["zeros"]:  # signed zeros
        z = torch.rand(B, V) < 0.3
        x[z] = torch.where(torch.rand(B, V)[z] < 0.5, 0.0, -0.0).double()
    if c["masked"]:
        x[torch.rand(B, V) < c["masked"]] = float("-inf")
    if c["dead_row"] and B > 1:
        x[rng.randrange(B)] = float("-inf")
    return x.to(c["dtype"])


def _config(rng: random.Random) -> dict:
    V = rng.choice([1, 2, 3, rng.randint(1, 20), rng.randint(20, 300)])
    eos = sorted(set(rng.randrange(V) for _ in range(rng.choice([1, 1, 1, 2, 3]))))
    steps = rng.sample(["temperature", "top_k", "top_p"], rng.randint(1, 3))
    return dict(
        B=rng.randint(1, 6), V=V, dtype=rng.choice(DTYPES),
        scale=rng.choice([1e-3, 1.0, 1.0, 1.0, 3.0, 3.0, 30.0, 1e4]),
        kind=rng.choice(["randn", "randn", "int", "half", "few"]), zeros=rng.random() < 0.25,
        masked=rng.choice([0.0, 0.0, 0.2, 0.7]), dead_row=rng.random() < 0.15,
        steps=steps, temperature=rng.choice(TEMPERATURES),
        top_k=rng.choice([1, 2, rng.randint(1, V + 2), V, V + 5]),
        top_p=rng.choice([1e-9, 0.01, rng.random(), 0.5, 0.9, 0.999999, 1.0]),
        min_keep=rng.choice([1] * 6 + [2, rng.randint(1, V + 1)]),
        eos=eos, eos_form=rng.choice(["int", "list", "tensor"]) if len(eos) == 1 else rng.choice(["list", "tensor"]),
        filter_value=rng.choice([float("-inf")] * 4 + [-1e4]),
    )


def _eos_arg(c):
    return c["eos"][0] if c["eos_form"] == "int" else list(c["eos"]) if c["eos_form"] == "list" else torch.tensor(
        c["eos"])


def _warper(name: str, c: dict):
    if name == "temperature":
        return TemperatureLogitsWarper(float(c["temperature"]))
    if name == "top_k":
        return kw.ConsistentTopKLogitsWarper(c["top_k"], _eos_arg(c), filter_value=c["filter_value"],
                                             min_tokens_to_keep=c["min_keep"])
    return kw.ConsistentTopPLogitsWarper(c["top_p"], _eos_arg(c), filter_value=c["filter_value"],
                                         min_tokens_to_keep=c["min_keep"])


def _hf(name: str, c: dict):
    if name == "top_k":
        return TopKLogitsWarper(c["top_k"], filter_value=c["filter_value"], min_tokens_to_keep=c["min_keep"])
    return TopPLogitsWarper(c["top_p"], filter_value=c["filter_value"], min_tokens_to_keep=c["min_keep"])


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: equal values with the same sign bit (NaN never)."""
    return (a == b) & (torch.signbit(a) == torch.signbit(b))


def topp_kept64(s: torch.Tensor, p: float, min_keep: int) -> torch.Tensor:
    """The float64 top-p kept set of one row (before the eos ids go back), as a (V,) bool mask."""
    V = s.numel()
    desc = s.double().sort(descending=True).values  # (by score: float64 probabilities of scores
    cross = int((torch.softmax(desc, dim=0).cumsum(0) < p).sum().clamp(max=V - 1))  # 1e-30 apart tie)
    cross = min(max(cross, min(min_keep, V) - 1), V - 1)
    return s.double() >= desc[cross]


def _judge_values(name, s, out, kept, c, msgs, r) -> bool:
    """Common rules; False when they fail (the rest of the row is not judged)."""
    fv = torch.tensor(c["filter_value"], dtype=s.dtype)
    ok_kept = _same_bits(out[kept], s[kept]).all()
    ok_drop = _same_bits(out[~kept], fv.expand(int((~kept).sum()))).all()
    if not (bool(ok_kept) and bool(ok_drop)):
        msgs.append(f"{name} row {r}: kept entries not bit-equal to the input or dropped ones not filter_value")
        return False
    return True


def _kept_mask(s: torch.Tensor, out: torch.Tensor, eos: list[int]) -> torch.Tensor:
    """Which tokens the warper kept: output bit-equal to the input (an input equal to filter_value
    counts as kept; it is masked either way)."""
    return _same_bits(out, s)


def judge_topk(s, out, c, msgs, r) -> None:
    V = s.numel()
    k = min(max(c["top_k"], c["min_keep"]), V)
    theta = s.double().sort(descending=True).values[k - 1]
    want = s.double() >= theta
    want[c["eos"]] = True
    fv = torch.tensor(c["filter_value"], dtype=s.dtype)
    expect = torch.where(want, s, fv)
    if not bool(_same_bits(out, expect).all()):
        bad = int((~_same_bits(out, expect)).nonzero()[0, 0])
        msgs.append(f"top_k row {r}: token {bad} is {float(out[bad])!r}, the definition gives {float(expect[bad])!r}")


def judge_topp(s, out, c, msgs, r) -> None:
    V = s.numel()
    eos = c["eos"]
    p = c["top_p"]
    if p >= 1.0:
        if not bool(_same_bits(out, s).all()):
            msgs.append(f"top_p row {r}: p = 1 changed the scores")
        return
    if bool(torch.isneginf(s).all()):
        if not bool(_same_bits(out, s).all()):
            msgs.append(f"top_p row {r}: an all -inf row changed")
        return
    kept = _kept_mask(s, out, eos)
    if not _judge_values("top_p", s, out, kept, c, msgs, r):
        return
    delta = (V + 16) * 4 * U32
    lo, hi = topp_kept64(s, p - delta, c["min_keep"]), topp_kept64(s, p + delta, c["min_keep"])
    fin = torch.isfinite(s)
    judged = fin & (s != torch.tensor(c["filter_value"], dtype=s.dtype))  # (an input at filter_value: either)
    judged[eos] = False
    if not bool(kept[eos].all()):
        msgs.append(f"top_p row {r}: an eos id dropped")
        return
    if bool((lo & judged & ~kept).any()):
        t = int((lo & judged & ~kept).nonzero()[0, 0])
        msgs.append(f"top_p row {r}: token {t} (score {float(s[t])!r}) dropped; the definition keeps it at p - δ")
        return
    if bool((~hi & judged & kept).any()):
        t = int((~hi & judged & kept).nonzero()[0, 0])
        msgs.append(f"top_p row {r}: token {t} (score {float(s[t])!r}) kept; the definition drops it at p + δ")
        return
    sv = s.double()
    kv, dv = sv[judged & kept], sv[judged & ~kept]
    if kv.numel() and dv.numel() and float(dv.max()) >= float(kv.min()):
        msgs.append(f"top_p row {r}: dropped score {float(dv.max())!r} >= kept score {float(kv.min())!r} "
                    "(ties decided apart, or not a threshold)")


def compare_hf_topp(s, out, c, msgs, r) -> None:
    """kexue's top-p against transformers' (eos put back); differences must be definitional."""
    hf = _hf("top_p", c)(None, s[None].clone())[0]
    hf = hf.index_copy(0, torch.tensor(c["eos"]), s[c["eos"]])
    differ = ~_same_bits(out, hf) & ~(torch.isneginf(s) & torch.isneginf(out) & torch.isneginf(hf))
    if c["filter_value"] != float("-inf"):
        differ &= ~(torch.isneginf(s))
    if not bool(differ.any()):
        return
    if s.dtype != torch.float32:
        COUNTS["definitional_hf_topp_16bit_softmax"] += 1
        return
    sv = s.double()
    d = differ.nonzero()[:, 0]
    hf_kept = _same_bits(hf, s)
    # a tie: HF kept part of a group of equal scores (its sort order chose), kexue all or none of it
    tied = all(bool(((sv == sv[i]) & (hf_kept != hf_kept[i])).any()) for i in d.tolist())
    if tied:
        COUNTS["definitional_hf_topp_ties"] += 1
        return
    V = s.numel()
    delta = (V + 16) * 4 * U32
    p = c["top_p"]
    amb = topp_kept64(s, p + delta, c["min_keep"]) & ~topp_kept64(s, p - delta, c["min_keep"])
    if bool(amb[d].all()):
        COUNTS["definitional_hf_topp_rounding"] += 1
        return
    msgs.append(f"top_p row {r}: differs from transformers' TopPLogitsWarper at tokens {d.tolist()[:5]} "
                "(no tie, fp32, not at the boundary)")


def compare_sampling_probs(a, chained, c, backend, msgs) -> None:
    """softmax(temperature → top-k → top-p chain) == sampling_probs(a, ...), per live row."""
    use_k, use_p = "top_k" in c["steps"], "top_p" in c["steps"]
    for r in range(a.shape[0]):
        s = a[r]
        if bool(torch.isneginf(s).all()) or not bool((torch.isfinite(s) | torch.isneginf(s)).all()):
            continue
        V = s.numel()
        kwargs = dict(keep=c["eos"], backend=backend)
        k = min(max(c["top_k"], c["min_keep"]), V)
        if use_k:
            kwargs["top_k"] = k
            theta = s.double().sort(descending=True).values[k - 1]
            if use_p and c["top_p"] < 1.0 and bool((s.double()[c["eos"]] < theta).any()):
                COUNTS["definitional_eos_outside_topk"] += 1
                continue
        if use_p:
            if c["min_keep"] > 1 and c["top_p"] < 1.0:
                continue  # (sampling_probs has no min_tokens_to_keep)
            kwargs["top_p"] = c["top_p"]
        q = kexue.decoding.sampling_probs(s[None], **kwargs)[0].double()
        ref = torch.softmax(chained[r].double(), dim=0)
        if c["filter_value"] != float("-inf"):
            ref = torch.softmax(torch.where(chained[r] == torch.tensor(c["filter_value"], dtype=s.dtype),
                                            float("-inf"), chained[r].double()), dim=0)
        gk, rk = q > 0, ref > 0
        seen = (q > UNDERFLOW_Q) | (ref > UNDERFLOW_Q)  # (float32 weights underflow below this)
        if not torch.equal(gk[seen], rk[seen]):
            delta = (V + 16) * 4 * U32
            cand = torch.ones(V, dtype=torch.bool)
            if use_k:
                cand = s.double() >= s.double().sort(descending=True).values[k - 1]
            sc = torch.where(cand, s.double(), torch.tensor(float("-inf"), dtype=torch.float64))
            p = c["top_p"] if use_p else 1.0
            amb = topp_kept64(sc, p + delta, 1) & ~topp_kept64(sc, p - delta, 1)
            # the kernels decide ties on float32 weights, the warper on scores: a weight within float32
            # rounding of the crossing one is either side (scores ~1e-6 apart after a huge temperature)
            kin = topp_kept64(sc, p, 1)
            g = sc - sc.max()
            w = g.exp()
            tau = float(w[kin].min())
            amb |= (w - tau).abs() <= 16 * U32 * (1 + g.abs().nan_to_num(0.0, posinf=0.0)) * tau
            if not bool(amb[(gk != rk) & seen].all()):
                msgs.append(f"sampling_probs row {r}: kept set differs from the chain's at tokens "
                            f"{(gk != rk).nonzero()[:, 0].tolist()[:5]}")
            else:
                COUNTS["equivalence_rounding_at_boundary"] += 1
            continue
        m = float(s.double()[gk].max())
        gap = (s.double() - m).abs().nan_to_num(0.0, posinf=0.0)
        tol = 1e-6 + (8 * gap + 4 * V) * U32 * ref + torch.where(seen, 0.0, UNDERFLOW_Q)
        if bool(((q - ref).abs() > tol).any()):
            i = int(((q - ref).abs() - tol).argmax())
            msgs.append(f"sampling_probs row {r}: q[{i}] = {float(q[i])!r}, softmax of the chain {float(ref[i])!r}")


def _check_errors(c, msgs) -> None:
    for what, make in (("top_k=0", lambda: kw.ConsistentTopKLogitsWarper(0, 0)),
                       ("top_p=0", lambda: kw.ConsistentTopPLogitsWarper(0.0, 0)),
                       ("top_p>1", lambda: kw.ConsistentTopPLogitsWarper(1.5, 0)),
                       ("eos=-1", lambda: kw.ConsistentTopPLogitsWarper(0.5, -1))):
        try:
            make()
            msgs.append(f"{what}: no error")
        except ValueError:
            pass
    x = torch.zeros(1, c["V"])
    for warper in (kw.ConsistentTopKLogitsWarper(1, c["V"]), kw.ConsistentTopPLogitsWarper(0.5, c["V"])):
        try:
            warper(None, x)
            msgs.append(f"{type(warper).__name__}: no error for eos id {c['V']} with V = {c['V']}")
        except ValueError:
            pass


def fuzz_warp(seed: int, backend: str, device: str) -> tuple[list[str], dict]:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    c = _config(rng)
    cfg = dict(c)
    x = _scores(c, rng)
    msgs: list[str] = []
    if seed % 16 == 0:
        _check_errors(c, msgs)
    s = x
    inputs, outputs = [], []
    for name in c["steps"]:
        out = _warper(name, c)(None, s.clone())
        if out.shape != s.shape or out.dtype != s.dtype:
            return [f"{name}: shape {tuple(out.shape)} dtype {out.dtype} for {tuple(s.shape)} {s.dtype}"], cfg
        inputs.append(s)
        outputs.append(out)
        if name != "temperature":
            for r in range(s.shape[0]):
                if not bool((torch.isfinite(s[r]) | torch.isneginf(s[r])).all()):
                    COUNTS["skipped_nonfinite"] += 1
                    continue
                if name == "top_k":
                    judge_topk(s[r], out[r], c, msgs, r)
                    hf = _hf("top_k", c)(None, s[r][None].clone())[0]
                    hf = hf.index_copy(0, torch.tensor(c["eos"]), s[r][c["eos"]])
                    if not bool(_same_bits(out[r], hf).all()):
                        msgs.append(f"top_k row {r}: differs from transformers' TopKLogitsWarper + eos")
                else:
                    n = len(msgs)
                    judge_topp(s[r], out[r], c, msgs, r)
                    if len(msgs) == n and c["top_p"] < 1.0:
                        compare_hf_topp(s[r], out[r], c, msgs, r)
        s = out
    # the equivalent fused call: temperature first, then top-k, then top-p
    order = [n for n in ("temperature", "top_k", "top_p") if n in c["steps"]]
    if c["steps"] == order and any(n != "temperature" for n in order):
        a = outputs[0] if order[0] == "temperature" else x
        compare_sampling_probs(a, outputs[-1], c, backend, msgs)
    return msgs, cfg


def mutate(rel: float) -> None:
    """ConsistentTopPLogitsWarper with top_p moved by ``rel`` (a nucleus that is off): reported."""
    right = kw.ConsistentTopPLogitsWarper.__call__

    def off(self, input_ids, scores):
        p = self.top_p
        self.top_p = min(1.0, p * (1 + rel))
        try:
            return right(self, input_ids, scores)
        finally:
            self.top_p = p

    kw.ConsistentTopPLogitsWarper.__call__ = off
