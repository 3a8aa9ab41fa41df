"""Feature maps φ of linear attention, applied over the last dimension.

==========  =========================================  ==========
name        φ(x)                                        F (dim)
==========  =========================================  ==========
"elu"       elu(x) + 1                                  Dk
"relu"      max(x, 0)                                   Dk
"softmax"   softmax(x) over the feature dim             Dk
"taylor"    concat(1, x / max(‖x‖₂, 1e-12))             Dk + 1
"none"      x (inputs already mapped)                   Dk
==========  =========================================  ==========

"taylor" makes φ(q)·φ(k) = 1 + cos(q, k) (the normalisation is torch.nn.functional.normalize's):
the first-order Taylor kernel exp(q·k) ≈ 1 + q·k on l2-normalised vectors (Li et al. 2020,
"Linear Attention Mechanism"), not the second-order map of Based (Arora et al. 2024).
"softmax" normalises q and k each over its own feature dim; Efficient Attention (Shen et al. 2021)
normalises k over the positions instead, which is not a per-token feature map.
The kernels fuse these same formulas; this module is their definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FEATURE_MAPS = ("none", "elu", "relu", "softmax", "taylor")
NORMALIZE_EPS = 1e-12  # F.normalize's clamp of ‖x‖ in the "taylor" map


def feature_dim(name: str | None, dk: int) -> int:
    """Dimension F of φ(x) for an input of last dim ``dk``."""
    return dk + 1 if name == "taylor" else dk


def apply_feature_map(x: torch.Tensor, name: str | None) -> torch.Tensor:
    """φ(x) for a named map, in x's dtype (compute in float32/float64 for accuracy); None is
    "none", as in the public functions."""
    if name is None or name == "none":
        return x
    if name == "elu":
        return F.elu(x) + 1
    if name == "relu":
        return F.relu(x)
    if name == "softmax":
        return torch.softmax(x, dim=-1)
    if name == "taylor":
        ones = torch.ones_like(x[..., :1])
        return torch.cat([ones, F.normalize(x, dim=-1, eps=NORMALIZE_EPS)], dim=-1)
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, a callable or None; got {name!r}")
