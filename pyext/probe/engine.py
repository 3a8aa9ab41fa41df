"""Perturbed masking (Wu et al., ACL 2020): impact matrices from batched masked forward passes.

Definition (the contract every path here meets, see :func:`impact_matrix`): for a sentence of W
words, ``x\\{i}`` has every subword of word i replaced by the mask token, ``x\\{i,j}`` those of
words i and j.  With ``H_p`` the hidden state at token position p of ``hidden_states[layer]``,

    M[i, j] = mean_{p ∈ P(i)} d(H_p(x\\{i}), H_p(x\\{i,j}))      (i ≠ j),   M[i, i] = 0,

P(i) the subword positions of word i (``subword="avg"``) or only its first (``"first"``), d the
Euclidean distance (``metric="dist"``) or 1 − cosine (``"cos"``).

How it is fast:
* one sequence ``x\\{i,j}`` (i < j) serves both M[i, j] (read at word i) and M[j, i] (read at
  word j): W single-masked + W(W−1)/2 pair-masked sequences per sentence instead of the (S+2)²
  of the published code (S subwords);
* the sequences of many sentences share batches, sorted by length (little padding), a token
  budget per batch;
* the forward stops at the highest requested layer, and that layer is computed for the read
  rows only (:mod:`kexue.probe.encoder`);
* the first layer's query/key/value projections run once per distinct (token, position) of a
  batch, since a batch holds copies of a few sentences that differ in one or two masked words
  (:func:`kexue.probe.encoder.shared_first_projections`; exact, about 4% of the work);
* batch construction (``masked_batch``) and the gather + distance + per-cell mean
  (``segment_distance``) are fused device ops (:mod:`kexue.probe.kernels`), with no Python
  loop over pairs; the model runs under ``torch.inference_mode`` (and autocast for ``dtype``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .._sharding import dist_context, run_sharded
from .._validate import as_int
from . import encoder as enc
from .kernels import masked_batch, segment_distance
from .tokenize import EncodedSentence, encode_words, mask_token_id, max_length, pack, pad_token_id

METRICS = ("dist", "cos")
SUBWORD_MODES = ("avg", "first")
#: tokens per batch when batch_size is None, per device type.  CPU: small enough that a layer's
#: activations (tokens × 4·hidden floats in the FFN, 12 MB for MiniLM) stay in cache; measured on
#: 12 PUD sentences with MiniLM, 2 threads: 1024-2048 tokens 14.5 s, 4096 15.3 s, 8192 16.6 s.
#: GPU: large enough to fill the device, small enough that the attention scores (K·heads·T²
#: floats) stay in the tens of MB.
TOKEN_BUDGET = {"cpu": 2048, "cuda": 16384}
DEFAULT_TOKEN_BUDGET = 8192  # any other device type


def token_budget(device: torch.device) -> int:
    """Tokens per batch for ``device`` when batch_size is None (see :data:`TOKEN_BUDGET`)."""
    return TOKEN_BUDGET.get(device.type, DEFAULT_TOKEN_BUDGET)
#: show a progress bar by default when a call runs more sequences than this
PROGRESS_MIN_SEQUENCES = 20000


def _check_options(metric: str, subword: str, batch_size: int | None) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if subword not in SUBWORD_MODES:
        raise ValueError(f"subword must be one of {SUBWORD_MODES}, got {subword!r}")
    if batch_size is not None:
        as_int("batch_size", batch_size, minimum=1)


ENCODER_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _model_device(model) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _read_positions(sentences: Sequence[EncodedSentence], subword: str, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(Wtot, Lw) token positions read for each word, and their validity mask."""
    starts = torch.tensor([p for s in sentences for p in s.starts], dtype=torch.long)
    ends = torch.tensor([p for s in sentences for p in s.ends], dtype=torch.long)
    if subword == "first":
        ends = starts + 1
    Lw = int((ends - starts).max())
    pos = starts[:, None] + torch.arange(Lw)[None, :]
    valid = pos < ends[:, None]
    return pos.where(valid, starts[:, None]).to(device), valid.to(device)


def pair_impacts(model, sentences: Sequence[EncodedSentence], pairs: Sequence[torch.Tensor], *,
                 layers: Sequence[int], metric: str = "dist", subword: str = "avg", batch_size: int | None = None,
                 mask_id: int, pad_id: int, dtype: torch.dtype | None = None, progress: bool | None = None,
                 backend: str = "auto") -> list[torch.Tensor]:
    """The engine: for each sentence s and each row (i, j) of ``pairs[s]`` (P_s, 2), i ≠ j, the
    impacts f(i, j) and f(j, i) read from the one sequence x\\{i,j}.  Returns, per sentence, a
    float32 tensor (len(layers), P_s, 2) on the CPU."""
    if dtype is not None and dtype not in ENCODER_DTYPES:
        raise TypeError(f"dtype must be None (the model's own) or one of {ENCODER_DTYPES} (the encoder's autocast "
                        f"dtype), got {dtype!r}")
    device = _model_device(model)
    n_sent = len(sentences)
    packed = pack(sentences, device)
    tok_off = packed["tok_offsets"]
    word_off = packed["word_offsets"].cpu()
    wpos, wvalid = _read_positions(sentences, subword, device)
    Lw = wpos.shape[1]
    lengths = torch.tensor([s.num_tokens for s in sentences], dtype=torch.long)
    words = torch.tensor([s.num_words for s in sentences], dtype=torch.long)

    # every sequence: (sentence, i, j); singles first (their rows are the references)
    singles_s = torch.repeat_interleave(torch.arange(n_sent), words)
    singles = torch.stack([singles_s, torch.arange(int(words.sum())) - word_off[singles_s],
                           torch.full_like(singles_s, -1)], 1)
    pair_rows = [torch.as_tensor(p, dtype=torch.long).reshape(-1, 2) for p in pairs]
    for s, p in enumerate(pair_rows):
        W = sentences[s].num_words
        if p.numel() and (p.min() < 0 or p.max() >= W or (p[:, 0] == p[:, 1]).any()):
            raise ValueError(f"pairs[{s}] must hold word indices i != j in [0, {W})")
    pair_s = torch.repeat_interleave(torch.arange(n_sent), torch.tensor([len(p) for p in pair_rows]))
    doubles = torch.cat([torch.cat(pair_rows, 0) if pair_rows else torch.zeros(0, 2, dtype=torch.long)], 0)
    doubles = torch.cat([pair_s[:, None], doubles], 1)

    D = None
    refs: list[torch.Tensor] = []
    results = torch.zeros(len(layers), len(doubles), 2)
    total = len(singles) + len(doubles)
    bar = None
    if progress or (progress is None and total >= PROGRESS_MIN_SEQUENCES):
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="seq", desc="perturbed masking")
        except ImportError:  # pragma: no cover - tqdm is optional
            bar = None
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype is not None and dtype != torch.float32
                else torch.autocast(device.type, enabled=False))

    def batches(seqs: torch.Tensor):
        """Batches of sequences of one length T (longest first): no product runs on padding.
        (Mixing lengths padded 3% of the tokens on 8 PUD sentences of 8-30 words.)"""
        order = torch.argsort(lengths[seqs[:, 0]], descending=True, stable=True)
        T_sorted = lengths[seqs[order, 0]]
        start = 0
        while start < len(order):
            T = int(T_sorted[start])
            n = batch_size or max(1, token_budget(device) // T)
            end = start + int((T_sorted[start:start + n] == T).sum())  # sorted: a prefix of length T
            yield order[start:end], T
            start = end

    with torch.inference_mode(), enc.eval_mode(model), autocast:
        # phase 1: x\{i}; its hidden rows at word i's read positions become the references
        for idx, T in batches(singles):
            seqs = singles[idx].to(device)
            ids, am = masked_batch(packed["tokens"], tok_off, packed["word_start"], packed["word_end"],
                                   packed["word_offsets"], seqs, mask_id, pad_id, T, backend=backend)
            g = packed["word_offsets"][seqs[:, 0]] + seqs[:, 1]
            pos, valid = wpos[g], wvalid[g]
            rows = enc.read_hidden_rows(model, ids, am, pos, layers, valid=valid)
            if D is None:
                D = rows[0].shape[-1]
                refs = [torch.zeros(int(tok_off[-1]), D, dtype=rows[0].dtype, device=device) for _ in layers]
            dest = (tok_off[seqs[:, 0]][:, None] + pos)[valid]
            for li, r in enumerate(rows):
                refs[li][dest] = r[valid].to(refs[li].dtype)
            if bar is not None:
                bar.update(len(idx))
        # phase 2: x\{i,j}, read at word i (→ f(i, j)) and at word j (→ f(j, i))
        for idx, T in batches(doubles):
            seqs = doubles[idx].to(device)
            K = len(idx)
            ids, am = masked_batch(packed["tokens"], tok_off, packed["word_start"], packed["word_end"],
                                   packed["word_offsets"], seqs, mask_id, pad_id, T, backend=backend)
            gi = packed["word_offsets"][seqs[:, 0]] + seqs[:, 1]
            gj = packed["word_offsets"][seqs[:, 0]] + seqs[:, 2]
            pos = torch.cat([wpos[gi], wpos[gj]], 1)                        # (K, 2·Lw)
            valid = torch.cat([wvalid[gi], wvalid[gj]], 1)
            hidden = enc.read_hidden_rows(model, ids, am, pos, layers, valid=valid)
            flat_valid = valid.reshape(-1)
            rows_idx = torch.arange(K * 2 * Lw, device=device)[flat_valid]
            ref_rows = (tok_off[seqs[:, 0]][:, None] + pos).reshape(-1)[flat_valid]
            seg = (2 * torch.arange(K, device=device)[:, None] + (torch.arange(2 * Lw, device=device) >= Lw)[None, :])
            seg = seg.reshape(-1)[flat_valid]
            for li, h in enumerate(hidden):
                out = segment_distance(h.reshape(K * 2 * Lw, -1), rows_idx, refs[li], ref_rows, seg, 2 * K,
                                       metric, backend=backend)
                results[li, idx] = out.float().reshape(K, 2).cpu()  # row n of doubles is global pair n
            if bar is not None:
                bar.update(K)
    if bar is not None:
        bar.close()
    return list(results.split([len(p) for p in pair_rows], dim=1))


def _encode_all(model, tokenizer, sentences) -> list[EncodedSentence]:
    limit = max_length(model, tokenizer)
    out = []
    for n, s in enumerate(sentences):
        try:
            out.append(encode_words(tokenizer, s, limit=limit))
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"sentence {n}: {exc}") from None
    return out


def _all_pairs(W: int) -> torch.Tensor:
    return torch.triu_indices(W, W, offset=1).t().contiguous()


def _to_matrices(W: int, vals: torch.Tensor) -> torch.Tensor:
    """(nl, P, 2) impacts of the upper-triangle pairs → (nl, W, W) matrices."""
    nl = vals.shape[0]
    M = torch.zeros(nl, W, W)
    iu = _all_pairs(W)
    M[:, iu[:, 0], iu[:, 1]] = vals[..., 0]
    M[:, iu[:, 1], iu[:, 0]] = vals[..., 1]
    return M


def impact_matrices(model, tokenizer, sentences: Sequence[str | Sequence[str]], *, layer: int | Sequence[int] = -1,
                    metric: str = "dist", subword: str = "avg", batch_size: int | None = None,
                    dtype: torch.dtype | None = None, progress: bool | None = None,
                    backend: str = "auto") -> list[torch.Tensor] | None:
    """Impact matrices of many sentences, their masked sequences packed into shared batches.

    Returns a list with one float32 CPU tensor per sentence: (W, W) for an int ``layer``, or
    (len(layer), W, W) for a list of layers (one pass serves all of them).  ``batch_size`` is a
    number of sequences per batch (default: a budget of ``token_budget(device)`` tokens);
    ``dtype=torch.bfloat16`` / ``float16`` runs the model under autocast; ``progress`` shows a
    tqdm bar (default: on long runs); ``backend`` picks the kernels of the fused ops.

    Launched under ``torchrun`` (torch.distributed initialised, world size > 1) every rank takes
    a share of the sentences (balanced by W²), and the results are gathered on rank 0: rank 0
    returns the full list, the other ranks return None.

    Example::

        >>> import kexue.probe as kp
        >>> model, tok = kp.default_model()                          # doctest: +SKIP
        >>> [M] = kp.impact_matrices(model, tok, ["The cat sat ."])  # doctest: +SKIP
        >>> M.shape                                                  # doctest: +SKIP
        torch.Size([4, 4])
    """
    _check_options(metric, subword, batch_size)
    layer = enc.layer_argument(layer)  # (numpy/0-d tensor ints: one layer, as an int)
    layers = enc.normalize_layers(model, layer)
    single_layer = isinstance(layer, int)
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of sentences (use impact_matrix for one sentence)")
    encoded = _encode_all(model, tokenizer, sentences)
    mid, pid = mask_token_id(tokenizer), pad_token_id(tokenizer)

    rank = dist_context()[1]

    def work(mine: list[int]) -> list[torch.Tensor]:
        vals = pair_impacts(model, [encoded[n] for n in mine], [_all_pairs(encoded[n].num_words) for n in mine],
                            layers=layers, metric=metric, subword=subword, batch_size=batch_size, mask_id=mid,
                            pad_id=pid, dtype=dtype, progress=progress if rank == 0 else False, backend=backend)
        return [_to_matrices(encoded[n].num_words, v) for n, v in zip(mine, vals, strict=True)]

    result = run_sharded([e.num_words for e in encoded], work)
    if result is None:  # a rank other than 0
        return None
    return [M[0] if single_layer else M for M in result]


def impact_matrix(model, tokenizer, words: str | Sequence[str], *, layer: int | Sequence[int] = -1,
                  metric: str = "dist", subword: str = "avg", batch_size: int | None = None,
                  dtype: torch.dtype | None = None, backend: str = "auto") -> torch.Tensor:
    """The (W, W) impact matrix of one sentence (a string is split on whitespace).

    ``M[i, j]`` is how much masking word j as well moves the representation of the masked word
    i: the mean over the subword positions p of word i (or its first, ``subword="first"``) of
    d(H_p(x\\{i}), H_p(x\\{i,j})), ``H = hidden_states[layer]`` (0 = embeddings, -1 = last),
    d Euclidean (``metric="dist"``) or 1 − cosine (``"cos"``); ``M[i, i] = 0``.
    W + W(W−1)/2 forward sequences, batched.  Always local (no torch.distributed sharding).

    Example::

        >>> import kexue.probe as kp
        >>> model, tok = kp.default_model()                                    # doctest: +SKIP
        >>> M = kp.impact_matrix(model, tok, "The quick brown fox jumps .")    # doctest: +SKIP
        >>> kp.parse_dependency(M)                                             # doctest: +SKIP
    """
    _check_options(metric, subword, batch_size)
    layer = enc.layer_argument(layer)  # (numpy/0-d tensor ints: one layer, as an int)
    layers = enc.normalize_layers(model, layer)
    e = _encode_all(model, tokenizer, [words])[0]
    vals = pair_impacts(model, [e], [_all_pairs(e.num_words)], layers=layers, metric=metric, subword=subword,
                        batch_size=batch_size, mask_id=mask_token_id(tokenizer), pad_id=pad_token_id(tokenizer),
                        dtype=dtype, progress=False, backend=backend)[0]
    M = _to_matrices(e.num_words, vals)
    return M[0] if isinstance(layer, int) else M


def count_sequences(num_words: int) -> int:
    """Sequences this engine runs for a sentence of W words: W + W(W−1)/2."""
    num_words = as_int("num_words", num_words, minimum=0)
    return num_words + math.comb(num_words, 2)
