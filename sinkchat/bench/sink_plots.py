"""PNG figures of ``sinkchat sinks``: attention shares per layer, the most-attended tokens, heat maps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sinkchat.bench.plots import pyplot, save
from sinkchat.bench.sink_stats import SINK_COUNTS, TOP_KINDS

if TYPE_CHECKING:
    from sinkchat.bench.sink_study import Heatmap

FORM_TITLES = {"text": "the document alone", "bos": "BOS + document", "chat": "document as a chat message"}
FORM_COLORS = {"text": "#1f77b4", "bos": "#ff7f0e", "chat": "#2ca02c"}
SHARE_STYLE = {
    **{f"first_{k}": {"lw": 2.2 - 0.4 * i, "alpha": 1 - 0.18 * i} for i, k in enumerate(SINK_COUNTS)},
    "special": {"ls": "--", "lw": 1.2, "color": "#9467bd"},
    "punctuation": {"ls": ":", "lw": 1.6, "color": "#ff7f0e"},
    "local": {"ls": "-.", "lw": 1.0, "color": "#2ca02c"},
}
SHARE_LABELS = {
    **{f"first_{k}": f"first {k}" for k in SINK_COUNTS},
    "special": "special tokens",
    "punctuation": "punctuation",
    "local": "itself + previous",
}


def sink_layers(
    means: Sequence[Mapping[str, Any]],
    variants: Sequence[str],
    path: Path,
    *,
    title: str,
    baselines: Mapping[str, float],
    global_layers: Sequence[int] = (),
) -> Path:
    """One panel per form: the share of each kind of key, layer by layer.

    ``global_layers``: in a model with sliding-window layers, the layers that see every
    token (shaded): only they can keep using a sink once the window has passed it.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 4.4), sharey=True, squeeze=False)
    cmap = plt.get_cmap("Blues_r")
    for ax, variant in zip(axes[0], variants, strict=True):
        rows = [r for r in means if r["variant"] == variant]
        layers = [r["layer"] for r in rows]
        for i, key in enumerate(SHARE_STYLE):
            ys = [r[key] for r in rows]
            if key == "special" and not any(ys):
                continue
            style = {"color": cmap(0.15 + 0.15 * i), **SHARE_STYLE[key]}
            ax.plot(layers, ys, label=SHARE_LABELS[key], **style)
        for i, layer in enumerate(global_layers):
            ax.axvspan(layer - 0.4, layer + 0.4, color="#dddddd", zorder=0, label="global layer" if i == 0 else None)
        ax.axhline(baselines[variant], color="grey", lw=0.8, ls="--")
        ax.annotate("first token, if attention were spread evenly", (layers[-1], baselines[variant]),
                    xytext=(0, 3), textcoords="offset points", fontsize=7, color="grey", ha="right")  # fmt: skip
        ax.set_title(f"{variant}: {FORM_TITLES.get(variant, variant)}", fontsize=10)
        ax.set_xlabel("layer")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("mean share of a query's attention")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{title}: where attention goes, layer by layer", fontsize=11)
    return save(fig, path)


def sink_top(
    positions: Sequence[Mapping[str, Any]], kinds: Sequence[Mapping[str, Any]], path: Path, *, title: str
) -> Path:
    """Which key is a query's most attended: by position, and by kind of token."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    variants = [r["variant"] for r in kinds]
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        rows = [r for r in positions if r["variant"] == variant]
        total = sum(r["count"] for r in rows)
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(rows))]
        left.bar(xs, [r["count"] / total for r in rows], width, label=variant, color=FORM_COLORS.get(variant))
        tick_labels = [r["position"] for r in rows]
        kind_row = kinds[i]
        kx = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(TOP_KINDS))]
        right.bar(kx, [kind_row[k] for k in TOP_KINDS], width, label=variant, color=FORM_COLORS.get(variant))
    left.set_xticks(range(len(tick_labels)), tick_labels, fontsize=8)
    left.set_xlabel("position of the most attended key")
    left.set_ylabel("fraction of (query, layer) pairs")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    right.set_xticks(range(len(TOP_KINDS)), TOP_KINDS, fontsize=8)
    right.set_xlabel("kind of the most attended key")
    right.set_ylim(0, 1)
    fig.suptitle(f"{title}: the most attended token, over every query and layer", fontsize=11)
    return save(fig, path)


def sink_heatmap(heat: Heatmap, path: Path, *, title: str) -> Path:
    """Attention maps of a few layers on a log colour scale (rows: queries; columns: keys)."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    n = len(heat.layers)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols + 1, 4 * rows + 0.5), squeeze=False, layout="constrained")
    cmap = plt.get_cmap("magma").with_extremes(bad="#f0f0f0")  # the masked future: exactly zero
    image = None
    for ax, layer, weights in zip(axes.flat, heat.layers, heat.weights, strict=False):
        image = ax.imshow(weights, cmap=cmap, norm=LogNorm(vmin=1e-3, vmax=1), interpolation="nearest")
        first = weights[heat.from_query :, 0].mean()
        ax.set_title(f"layer {layer} · first token {first:.0%}", fontsize=10)
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        ax.grid(False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention (mean over heads)")
    first = heat.pieces[0].replace("\n", "\\n")
    fig.suptitle(
        f"{title}: {heat.document!r}, {FORM_TITLES.get(heat.variant, heat.variant)} "
        f"({len(heat.pieces)} tokens, first {first!r}; titles: share of queries {heat.from_query}+)",
        fontsize=11,
    )
    fig.savefig(path)
    plt.close(fig)
    return path
