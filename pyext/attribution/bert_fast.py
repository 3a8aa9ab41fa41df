"""An exact, hand-written integrand for BERT sequence classifiers: IG over the embeddings block.

``token_attributions`` with the default ``layer="embeddings"`` evaluates, at every quadrature
point α and for every text, g(α) = ∂F(z)/∂z at z = e' + α(e − e') (e, e' the embeddings block's
output at the text and at the baseline; F the target class's logit).  Through autograd (and in
Captum's LayerIG) each point costs one forward and one input-gradient backward of the whole
encoder.  For ``BertForSequenceClassification`` in eval mode this module computes the same
numbers with less work, all of it exact (only the order of float sums changes):

1. **Layer 0's Q/K/V are affine in α**: QKV(z) = (e'Wᵀ + b) + α·(e − e')Wᵀ.  The two products are
   taken once per text; a point costs an axpy instead of a (L × D)·(D × 3D) GEMM.
2. **IG needs only Σ_k w_k g(α_k)**, and layer 0's input gradient is g = d_res + d_QKV·W: the
   weighted sum of d_QKV over the points is taken *before* the product with W, so that GEMM runs
   once per text and chunk instead of once per point.
3. **The head reads only [CLS]** (pooler on position 0, then the classifier): in the last
   layer only row 0 needs its query, attention output, LayerNorms and feed-forward.  The other
   rows enter through keys and values only, and those are reassociated: row 0's scores are
   (q0_h W_k,h)·h_l per head (the key bias adds the same number to every score of a head, which
   the softmax drops) and its context is (Σ_l p_l h_l) W_v,hᵀ + b_v,h.  The last layer costs
   O(H·D) per token and O(D²) per row instead of 12·D² per token, forward and backward.
4. **No autograd**: the backward is written out (LayerNorm and GELU backward by ATen's own
   kernels, attention by its softmax identity), nothing computes or keeps parameter gradients,
   and the GEMMs can run through oneDNN (``fast_linear``; :mod:`kexue.cpu_linear`).  On the CPU
   the attention of layers 0 … N−2, forward and backward, is one kernel per (row, head) that reads
   the fused Q/K/V rows in place and writes its output in the layout the next GEMM reads
   (``kexue::attention_qkv_fwd`` / ``_bwd``, :mod:`kexue.attribution.op`): no head split or merge
   copies, 1.7-2.5× the composite's speed at L = 10-56 (profile: attention was ~12 % of the time).
5. Texts of one token length share forwards with no attention mask at all (none is needed: every
   token is real), as in the autograd path.

GEMM FLOPs per token and point (units of D² multiply-adds, feed-forward width 4D, N layers):
autograd 24·N (12 forward, 12 backward); here 24·(N − 2) + 18 for layer 0 + O(H/D) for the last
layer, plus 24 per text-point (row 0) and 3 per text and chunk (layer 0's QKV): for MiniLM-L6 (N = 6,
H = 12, D = 384) 114 instead of 144, 0.79×.  No trick changes any product's operands beyond
reassociation: the results equal autograd's to float rounding (float64 tests: < 1e-12 relative).
Memory: the activations of one chunk of rows (as autograd keeps them), no parameter copies
beyond the fused QKV/KV weights.

:func:`support` says whether a model qualifies (and why not); everything else goes through the
generic autograd integrand.  Tests: ``tests/test_attribution_fast.py`` checks this path against
the autograd path and against Captum in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_linear import linear as onednn_linear
from ..cpu_linear import onednn_available
from .op import attention_qkv, attention_qkv_backward


def support(model: nn.Module, layer: nn.Module) -> str | None:
    """None when :class:`BertClassifierIntegrand` computes this model's integrand exactly, else the
    reason it does not (then the autograd path is used)."""
    if type(model).__name__ != "BertForSequenceClassification":
        return f"model is {type(model).__name__}, not BertForSequenceClassification"
    bert = getattr(model, "bert", None)
    if bert is None or layer is not getattr(bert, "embeddings", None):
        return "the layer is not the model's embeddings block"
    if model.training:
        return "model is in training mode (dropout)"
    cfg = model.config
    if getattr(cfg, "hidden_act", None) != "gelu":
        return f"hidden_act is {getattr(cfg, 'hidden_act', None)!r}, not 'gelu'"
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute":
        return "relative position embeddings in attention"
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return "decoder or cross-attention configuration"
    if getattr(cfg, "_attn_implementation", "eager") not in ("eager", "sdpa", None):
        return f"attention implementation {cfg._attn_implementation!r}"
    if len(bert.encoder.layer) < 2:
        return "fewer than 2 layers (layer 0 would also be the [CLS]-only last layer)"
    if bert.pooler is None:
        return "no pooler"
    p = next(model.parameters())
    if p.dtype not in (torch.float32, torch.float64):
        return f"parameters are {p.dtype} (the fast path runs float32/float64)"
    for lay in bert.encoder.layer:
        sa = lay.attention.self
        if getattr(sa, "is_decoder", False) or not isinstance(sa.query, nn.Linear):
            return "non-standard attention block"
        if type(lay.intermediate.intermediate_act_fn).__name__ not in ("GELUActivation",):
            return "non-standard activation"
    if not isinstance(model.bert.pooler.activation, nn.Tanh):
        return "pooler activation is not tanh"
    return None


@dataclass
class _Layer:
    wqkv: torch.Tensor  # (3D, D) rows: query, key, value
    bqkv: torch.Tensor
    wo: torch.Tensor
    bo: torch.Tensor
    ln1: tuple[torch.Tensor, torch.Tensor, float]
    wi: torch.Tensor
    bi: torch.Tensor
    wo2: torch.Tensor
    bo2: torch.Tensor
    ln2: tuple[torch.Tensor, torch.Tensor, float]


def _layers(model: nn.Module) -> list[_Layer]:
    out = []
    for lay in model.bert.encoder.layer:
        sa, so = lay.attention.self, lay.attention.output
        w = torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]).detach()
        b = torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]).detach()
        out.append(_Layer(w, b, so.dense.weight.detach(), so.dense.bias.detach(),
                          (so.LayerNorm.weight.detach(), so.LayerNorm.bias.detach(), so.LayerNorm.eps),
                          lay.intermediate.dense.weight.detach(), lay.intermediate.dense.bias.detach(),
                          lay.output.dense.weight.detach(), lay.output.dense.bias.detach(),
                          (lay.output.LayerNorm.weight.detach(), lay.output.LayerNorm.bias.detach(),
                           lay.output.LayerNorm.eps)))
    return out


class BertWeights:
    """A model's weights as the integrand reads them, built once per call of ``token_attributions``
    and shared by the integrands of all its length groups: the fused Q/K/V weights (a
    concatenation) and, for the oneDNN path, transposed copies of the weights whose input
    gradients it takes (g·W = linear(g, Wᵀ)), made on first use."""

    def __init__(self, model: nn.Module):
        self.layers = _layers(model)
        self.transposed: dict[int, torch.Tensor] = {}  # id(W) -> Wᵀ contiguous (W is kept alive by layers)


def _ln(x: torch.Tensor, ln) -> tuple[torch.Tensor, tuple]:
    w, b, eps = ln
    y, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), w, b, eps)
    return y, (x, mean, rstd)


def _ln_back(dy: torch.Tensor, saved, ln) -> torch.Tensor:
    x, mean, rstd = saved
    return torch.ops.aten.native_layer_norm_backward(dy, x, (x.shape[-1],), mean, rstd, ln[0], ln[1],
                                                     [True, False, False])[0]


class BertClassifierIntegrand:
    """The integrand of ``token_attributions`` for one length group of a BERT classifier.

    ``e_x``, ``e_b``: (G, L, D) embeddings-block outputs at the texts and baselines; ``target``:
    (G,) class per text; ``weights``: the model's :class:`BertWeights`, to share among groups.
    ``__call__(ex, alphas, grad=True)`` is the autograd integrand's contract (per-row gradients
    (R, L, D) and values F); :meth:`weighted` returns Σ_rows w·g per text instead, with layer 0's
    last GEMM after the sum (point 2 above)."""

    def __init__(self, model: nn.Module, e_x: torch.Tensor, e_b: torch.Tensor, target: torch.Tensor,
                 fast_linear: bool = False, weights: BertWeights | None = None):
        cfg = model.config
        self.H = cfg.num_attention_heads
        self.D = cfg.hidden_size
        self.dh = self.D // self.H
        self.scale = 1.0 / math.sqrt(self.dh)
        weights = weights if weights is not None else BertWeights(model)
        self.layers = weights.layers
        self.dtype = e_x.dtype
        self.use_onednn = bool(fast_linear) and e_x.dtype == torch.float32 and e_x.device.type == "cpu" \
            and onednn_available()
        self._wt = weights.transposed
        pool, cls = model.bert.pooler.dense, model.classifier
        self.wp, self.bp = pool.weight.detach(), pool.bias.detach()
        self.wc, self.bc = cls.weight.detach(), cls.bias.detach()
        self.target = target.to(e_x.device)
        first = self.layers[0]
        with torch.no_grad():
            self.e_b = e_b
            self.de = e_x - e_b
            self.qkv_b = self._lin(e_b, first.wqkv, first.bqkv)  # (G, L, 3D)
            self.dqkv = self._lin(self.de, first.wqkv, None)

    # -- GEMMs ---------------------------------------------------------------------------------
    def _lin(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """x Wᵀ + b."""
        if self.use_onednn:
            return onednn_linear(x, w, b)
        return F.linear(x, w, b)

    def _back(self, g: torch.Tensor, w: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """g W (+ add): the input gradient of a linear layer (plus another gradient)."""
        if self.use_onednn:
            wt = self._wt.get(id(w))
            if wt is None:
                wt = self._wt[id(w)] = w.t().contiguous()
            out = onednn_linear(g, wt, None)
            return out if add is None else out.add_(add)
        if add is None:
            return g @ w
        g2 = g.reshape(-1, g.shape[-1])
        return torch.addmm(add.reshape(-1, add.shape[-1]), g2, w).view(*g.shape[:-1], w.shape[-1])

    # -- one encoder layer ------------------------------------------------------------------------
    def _layer_fwd(self, h: torch.Tensor, qkv: torch.Tensor, lay: _Layer, keep: bool):
        ctx, p = attention_qkv(qkv, self.H, self.scale)
        h1, s1 = _ln(self._lin(ctx, lay.wo, lay.bo).add_(h), lay.ln1)
        u = self._lin(h1, lay.wi, lay.bi)
        h2, s2 = _ln(self._lin(F.gelu(u), lay.wo2, lay.bo2).add_(h1), lay.ln2)
        return h2, ((qkv, p, s1, u, s2) if keep else None)

    def _layer_back(self, dh2: torch.Tensor, saved, lay: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
        """(d residual input, d QKV (R, L, 3D)); the input's gradient is their sum after dQKV·Wqkv."""
        qkv, p, s1, u, s2 = saved
        dx2 = _ln_back(dh2, s2, lay.ln2)
        du = torch.ops.aten.gelu_backward(self._back(dx2, lay.wo2), u)
        dx1 = _ln_back(self._back(du, lay.wi, add=dx2), s1, lay.ln1)
        return dx1, attention_qkv_backward(self._back(dx1, lay.wo), qkv, p, self.H, self.scale)

    # -- the last layer and the head: [CLS] row only ----------------------------------------------
    # Only row 0 has a query.  Its scores q0·K_lᵀ = (q0_h W_k,h)·h_l + q0_h·b_k,h and its context
    # Σ_l p_l V_l = (Σ_l p_l h_l) W_v,hᵀ + b_v,h are taken through the D-vectors q0_h W_k,h and
    # Σ_l p_l h_l per head: O(H·D) per token and O(D²) per row, instead of the keys' and values'
    # GEMMs (2·D² per token) forward and backward.  The same sums, reassociated.
    def _last_fwd(self, h: torch.Tensor, lay: _Layer, tgt: torch.Tensor, keep: bool):
        R, L, D = h.shape
        H, dh = self.H, self.dh
        wk = lay.wqkv[D:2 * D].view(H, dh, D)
        wv = lay.wqkv[2 * D:].view(H, dh, D)
        bv = lay.bqkv[2 * D:].view(H, dh)  # the key bias adds q0_h·b_k,h to every score of a head: softmax drops it
        h0 = h[:, 0]
        q = self._lin(h0, lay.wqkv[:D], lay.bqkv[:D]).view(R, H, dh)
        a = torch.bmm(q.transpose(0, 1), wk).transpose(0, 1)  # (R, H, D): q_h W_k,h
        p = torch.softmax(torch.bmm(a, h.transpose(1, 2)).mul_(self.scale), dim=-1)  # (R, H, L)
        ph = torch.bmm(p, h)  # (R, H, D)
        ctx = (torch.bmm(ph.transpose(0, 1), wv.transpose(1, 2)).transpose(0, 1) + bv).reshape(R, D)
        h1, s1 = _ln(self._lin(ctx, lay.wo, lay.bo).add_(h0), lay.ln1)
        u = self._lin(h1, lay.wi, lay.bi)
        h2, s2 = _ln(self._lin(F.gelu(u), lay.wo2, lay.bo2).add_(h1), lay.ln2)
        pooled = torch.tanh(self._lin(h2, self.wp, self.bp))
        logits = self._lin(pooled, self.wc, self.bc)
        f = logits.gather(1, tgt.view(-1, 1)).squeeze(1)
        return f, ((h, a, p, s1, u, s2, pooled) if keep else None)

    def _last_back(self, saved, lay: _Layer, tgt: torch.Tensor) -> torch.Tensor:
        h, a, p, s1, u, s2, pooled = saved
        R, L, D = h.shape
        H, dh = self.H, self.dh
        wk = lay.wqkv[D:2 * D].view(H, dh, D)
        wv = lay.wqkv[2 * D:].view(H, dh, D)
        dpre = self.wc[tgt] * (1 - pooled * pooled)
        dx2 = _ln_back(self._back(dpre, self.wp), s2, lay.ln2)
        du = torch.ops.aten.gelu_backward(self._back(dx2, lay.wo2), u)
        dx1 = _ln_back(self._back(du, lay.wi, add=dx2), s1, lay.ln1)
        dctx = self._back(dx1, lay.wo).view(R, H, dh)
        dph = torch.bmm(dctx.transpose(0, 1), wv).transpose(0, 1)  # (R, H, D)
        dp = torch.bmm(dph, h.transpose(1, 2))  # (R, H, L)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        ds.mul_(self.scale)
        da = torch.bmm(ds, h)  # (R, H, D)
        dq = torch.bmm(da.transpose(0, 1), wk.transpose(1, 2)).transpose(0, 1)  # (+ Σ_l ds_l · b_k = 0)
        # rows l: Σ_h p_hl dph_h (values) + Σ_h ds_hl a_h (keys), one bmm
        dh = torch.bmm(torch.cat([p, ds], 1).transpose(1, 2), torch.cat([dph, a], 1))
        dh[:, 0] += dx1 + self._back(dq.reshape(R, D), lay.wqkv[:D])
        return dh

    # -- the integrand ----------------------------------------------------------------------------
    def _run(self, ex: torch.Tensor, alphas: torch.Tensor, grad: bool):
        """F at the rows (ex, α) and, with ``grad``, layer 0's (d residual, d QKV) per row."""
        a = alphas.to(device=self.de.device, dtype=self.dtype).view(-1, 1, 1)
        z = torch.addcmul(self.e_b[ex], a, self.de[ex])
        qkv = torch.addcmul(self.qkv_b[ex], a, self.dqkv[ex])
        tgt = self.target[ex]
        saved = []
        h = z
        for i, lay in enumerate(self.layers[:-1]):
            if i > 0:
                qkv = self._lin(h, lay.wqkv, lay.bqkv)
            h, s = self._layer_fwd(h, qkv, lay, grad)
            saved.append(s)
        f, s_last = self._last_fwd(h, self.layers[-1], tgt, grad)
        if not grad:
            return f, None
        dh = self._last_back(s_last, self.layers[-1], tgt)
        for i in range(len(self.layers) - 2, 0, -1):
            dres, dqkv = self._layer_back(dh, saved[i], self.layers[i])
            dh = self._back(dqkv, self.layers[i].wqkv, add=dres)
        dres, dqkv = self._layer_back(dh, saved[0], self.layers[0])
        return f, (dres, dqkv)

    @torch.no_grad()
    def __call__(self, ex: torch.Tensor, alphas: torch.Tensor, grad: bool = True):
        f, parts = self._run(ex, alphas, grad)
        if not grad:
            return (), f
        dres, dqkv = parts
        return (self._back(dqkv, self.layers[0].wqkv, add=dres),), f

    @torch.no_grad()
    def weighted(self, ex: torch.Tensor, alphas: torch.Tensor, w: torch.Tensor):
        """(texts, (Σ_rows w_r g_r per text,), F per row): layer 0's QKV gradient is summed over
        the rows of each text before its product with W (one GEMM per text, not per row).  ``w``
        is (rows,), or (rows, M) for M weightings at once (the sums are then (texts, M, L, D))."""
        f, (dres, dqkv) = self._run(ex, alphas, True)
        uniq, inv = torch.unique(ex, return_inverse=True)
        wm = w.to(self.dtype).view(len(ex), -1)  # (R, M)
        M = wm.shape[1]
        sres = torch.zeros((len(uniq), M, *dres.shape[1:]), dtype=self.dtype, device=dres.device)
        sqkv = torch.zeros((len(uniq), M, *dqkv.shape[1:]), dtype=self.dtype, device=dres.device)
        for m in range(M):  # one weighting at a time: no (R, M, L, 3D) temporary
            sres[:, m].index_add_(0, inv, dres * wm[:, m, None, None])
            sqkv[:, m].index_add_(0, inv, dqkv * wm[:, m, None, None])
        g = self._back(sqkv.flatten(0, 1), self.layers[0].wqkv, add=sres.flatten(0, 1))
        g = g.view(len(uniq), M, *dres.shape[1:])
        return uniq, (g if w.dim() == 2 else g[:, 0],), f
