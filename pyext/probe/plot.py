"""Pictures of an impact matrix: the heatmap, with the dependency tree drawn over the words."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def plot_impact(matrix: torch.Tensor, words: Sequence[str], heads: Sequence[int] | None = None,
                path: str | Path | None = None, *, title: str | None = None):
    """Draws ``matrix`` (W, W) as a heatmap (row i = the probed word, column j = the word also
    masked) and, above it, the tree ``heads`` (``heads[d]`` = 1-based head of word d+1, 0 = root)
    as arcs from head to dependent.  Saves to ``path`` when given; returns the figure."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.patches import Arc
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'kexue[probe]'") from exc
    M = torch.as_tensor(matrix).detach().float().cpu()
    W = len(words)
    if M.shape != (W, W):
        raise ValueError(f"matrix must be ({W}, {W}) for {W} words, got {tuple(M.shape)}")
    size = max(4.0, 0.45 * W + 2)
    fig, (ax_tree, ax) = plt.subplots(2, 1, figsize=(size, size * 1.35), height_ratios=[1, 3], sharex=True,
                                      gridspec_kw={"hspace": 0.02})
    im = ax.imshow(M.numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(W), words, rotation=90)
    ax.set_yticks(range(W), words)
    ax.set_xlabel("masked as well (j)")
    ax.set_ylabel("probed word (i)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="impact f(i, j)")
    ax_tree.set_ylim(0, max(2.0, W / 2 + 1))
    ax_tree.axis("off")
    if heads is not None:
        if len(heads) != W:
            raise ValueError(f"heads must have {W} entries, got {len(heads)}")
        for d, h in enumerate(heads):
            if h == 0:  # the root: an arrow from above
                ax_tree.annotate("", xy=(d, 0.1), xytext=(d, W / 2 + 0.8),
                                 arrowprops={"arrowstyle": "->", "color": "crimson"})
                continue
            a, b = sorted((h - 1, d))
            ax_tree.add_patch(Arc(((a + b) / 2, 0.1), b - a, (b - a) * 0.9 + 0.4, theta1=0, theta2=180,
                                  color="tab:blue", lw=1.2))
            ax_tree.plot([d], [0.12], marker="v", color="tab:blue", ms=4)
    if title:
        ax_tree.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
