"""Pictures of token attributions: tokens coloured by score, red positive, blue negative.

:func:`render` writes a PNG (matplotlib) and an HTML page; the colour scale is symmetric,
±max |score| over everything drawn, so white means zero in both.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from .text import TokenAttribution

COLORMAP = "bwr"  # blue (negative) - white (zero) - red (positive)
LINE_WIDTH = 0.96  # fraction of the figure's width a line of tokens may take


def _items(r: TokenAttribution, level: str) -> tuple[list[str], list[float]]:
    if level == "words":
        return list(r.words), [float(v) for v in r.word_scores]
    if level == "tokens":
        return list(r.tokens), [float(v) for v in r.scores]
    raise ValueError(f"level must be 'tokens' or 'words', got {level!r}")


def _title(r: TokenAttribution) -> str:
    return (f"target {r.target}: F(x) = {r.f_input:.3f}, F(x') = {r.f_baseline:.3f}, "
            f"|delta| = {abs(r.delta):.2g}, {r.steps} steps")


def render(result: TokenAttribution | Sequence[TokenAttribution], path: str | Path, *, level: str = "tokens",
           title: str | None = None) -> tuple[Path, Path]:
    """Write ``path`` with suffix ``.png`` and ``.html``: each text's tokens (or words,
    ``level="words"``) on a background coloured by score, one block per text, and a colour bar.
    Returns (png path, html path).

    Example::

        >>> r = kexue.attribution.token_attributions(model, tok, "a gripping film")  # doctest: +SKIP
        >>> kexue.attribution.render(r, "ig.png")                                  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    results = [result] if isinstance(result, TokenAttribution) else list(result)
    if not results:
        raise ValueError("result: nothing to render")
    base = Path(path)
    png, page = base.with_suffix(".png"), base.with_suffix(".html")
    rows = [_items(r, level) for r in results]
    vmax = max((abs(v) for _, vals in rows for v in vals), default=0.0) or 1.0
    norm = Normalize(-vmax, vmax)
    cmap = plt.get_cmap(COLORMAP)

    fig = plt.figure(figsize=(10, 1.0 + 0.9 * sum(1 + len(" ".join(t)) // 90 for t, _ in rows)))
    renderer = fig.canvas.get_renderer()
    fig_w, fig_h = fig.get_size_inches() * fig.dpi
    line_h = 26 / fig_h
    y = 1 - 0.5 * line_h
    if title:
        fig.text(0.01, y, title, fontsize=11, weight="bold", va="center")
        y -= line_h
    for r, (toks, vals) in zip(results, rows, strict=True):
        fig.text(0.01, y, _title(r), fontsize=8, color="0.35", va="center")
        y -= line_h
        x = 0.01
        for t, v in zip(toks, vals, strict=True):
            txt = fig.text(x, y, t, fontsize=11, va="center", family="DejaVu Sans",
                           bbox={"facecolor": cmap(norm(v)), "edgecolor": "none", "pad": 2})
            w = txt.get_window_extent(renderer).width / fig_w + 0.006
            if x + w > LINE_WIDTH and x > 0.01:  # wrap
                x, y = 0.01, y - line_h
                txt.set_position((x, y))
            x += w
        y -= 1.4 * line_h
    cax = fig.add_axes((0.25, max(0.02, y - 0.25 * line_h), 0.5, 0.35 * line_h))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, orientation="horizontal",
                 label="attribution (red: raises the target, blue: lowers it)")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)

    def css(v: float) -> str:
        rgba = cmap(norm(v))
        return f"rgb({int(255 * rgba[0])},{int(255 * rgba[1])},{int(255 * rgba[2])})"

    blocks = []
    for r, (toks, vals) in zip(results, rows, strict=True):
        spans = " ".join(f'<span title="{v:+.4g}" style="background:{css(v)};padding:2px 3px;border-radius:3px">'
                         f"{html.escape(t)}</span>" for t, v in zip(toks, vals, strict=True))
        blocks.append(f"<p style='color:#666;font-size:12px'>{html.escape(_title(r))}</p><p>{spans}</p>")
    bar = "".join(f'<span style="background:{css(vmax * (k / 10 - 1))};display:inline-block;width:24px">&nbsp;</span>'
                  for k in range(21))
    page.write_text("<!doctype html><meta charset='utf-8'><title>kexue attributions</title>"
                    f"<body style='font-family:sans-serif;font-size:16px;line-height:2'>"
                    f"{'<h3>' + html.escape(title) + '</h3>' if title else ''}{''.join(blocks)}"
                    f"<p style='font-size:12px'>{-vmax:.3g} {bar} {vmax:+.3g} (red raises the target, blue lowers "
                    "it)</p></body>", encoding="utf-8")
    return png, page
