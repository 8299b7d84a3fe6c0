"""Where attention goes: shares of the first tokens, special tokens and punctuation, per layer.

Pure numpy over head-averaged attention maps (``weights[layer, query, key]``, causal, each
row summing to 1), so every statistic is testable on hand-made maps without a model.

Only queries from ``from_query`` on are counted: a query at position ``q`` sees just
``q + 1`` keys, so early queries give the first tokens a large share by construction.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

SINK_COUNTS = (1, 2, 4, 8)
TOP_KINDS = ("first", "itself", "previous", "special", "punctuation", "other")
"""What the most-attended key of a query is, tested in this order."""
TOP_POSITIONS = 16
"""The position histogram counts keys 0..15 one by one and the rest together."""


def is_punctuation(piece: str) -> bool:
    """A token made only of punctuation, symbols and white space (``.``, ``,\\n``, `` —``)."""
    return bool(piece) and all(ch.isspace() or unicodedata.category(ch)[0] in "PS" for ch in piece)


@dataclass(frozen=True)
class TokenKinds:
    """Per-token flags of one document."""

    special: np.ndarray
    punctuation: np.ndarray

    @classmethod
    def of(cls, pieces: Sequence[str], special: Sequence[bool]) -> TokenKinds:
        import numpy as np

        return cls(np.array(special, dtype=bool), np.array([is_punctuation(p) for p in pieces], dtype=bool))


def _queries(weights: np.ndarray, from_query: int) -> np.ndarray:
    if from_query < 1:
        raise ValueError("from_query must be 1 or more")
    if weights.shape[1] <= from_query:
        raise ValueError(f"only {weights.shape[1]} tokens: no queries from position {from_query} on")
    return weights[:, from_query:, :]


def sliding_layers(weights: np.ndarray, window: int, tolerance: float = 1e-6) -> list[int]:
    """Layers whose queries see only the last ``window`` keys (a key k is visible to q when q - k < window).

    Told from the maps themselves: masked keys get exactly no attention.  Only a text
    longer than the window can show it; for a shorter one the list is empty.
    """
    import numpy as np

    n = weights.shape[1]
    if window <= 0 or n <= window:
        return []
    q = np.arange(window, n)
    out = []
    for layer in range(weights.shape[0]):
        older = np.cumsum(weights[layer], axis=1)[q, q - window]  # mass on keys 0 .. q - window
        if float(older.max()) < tolerance:
            out.append(layer)
    return out


def layer_shares(
    weights: np.ndarray,
    kinds: TokenKinds,
    from_query: int,
    windows: Sequence[int | None] | None = None,
) -> list[dict[str, float]]:
    """One row per layer: the mean share of attention a query gives to each kind of key.

    ``pos_j``: the token at position j (j < 8).  ``first_k``: the first k tokens together.
    ``special``: control tokens (anywhere, the first one included).  ``punctuation``:
    punctuation tokens after the first.  ``local``: the query itself and its predecessor.
    ``top_first``: how often the first token is the most attended.  ``even``: the share one
    key would get if every query spread its attention evenly over the keys it can see
    (the no-sink baseline: in a sliding-window layer, the last ``window`` keys only);
    ``punctuation_even``: the visible punctuation tokens' share in that case.  ``sliding``
    is 1 for a layer with a window (``windows[layer]``), else 0.
    """
    import numpy as np

    q = _queries(weights, from_query)
    n_layer, n_q, _ = q.shape
    rows = np.arange(n_q)
    pos = rows + from_query
    punct = kinds.punctuation.copy()
    punct[0] = False
    windows = list(windows) if windows is not None else [None] * n_layer
    width = SINK_COUNTS[-1]
    shares = {f"pos_{j}": q[:, :, j].mean(-1) for j in range(width)}
    shares.update({f"first_{k}": q[:, :, :k].sum(-1).mean(-1) for k in SINK_COUNTS})
    shares["special"] = q[:, :, kinds.special].sum(-1).mean(-1)
    shares["punctuation"] = q[:, :, punct].sum(-1).mean(-1)
    shares["local"] = (q[:, rows, pos] + q[:, rows, pos - 1]).mean(-1)
    shares["top_first"] = (q.argmax(-1) == 0).mean(-1)
    counted = np.concatenate([[0], np.cumsum(punct)])  # punctuation among keys [0, i)

    def even(window: int | None) -> dict[str, float]:
        first = pos + 1 - np.minimum(pos + 1, window) if window else np.zeros_like(pos)
        seen = pos + 1 - first
        return {
            "even": float(np.where(first == 0, 1.0 / seen, 0.0).mean()),
            "punctuation_even": float(((counted[pos + 1] - counted[first]) / seen).mean()),
            "sliding": 1.0 if window else 0.0,
        }

    return [
        {"layer": layer, **{k: float(v[layer]) for k, v in shares.items()}, **even(windows[layer])}
        for layer in range(n_layer)
    ]


def top_positions(weights: np.ndarray, from_query: int) -> np.ndarray:
    """How often each key position is a query's most attended, over queries and layers.

    Bins 0..TOP_POSITIONS-1 count single positions; the last bin counts every later one.
    """
    import numpy as np

    top = _queries(weights, from_query).argmax(-1).ravel()
    return np.bincount(np.minimum(top, TOP_POSITIONS), minlength=TOP_POSITIONS + 1)


def top_kinds(weights: np.ndarray, kinds: TokenKinds, from_query: int) -> dict[str, int]:
    """How often the most attended key is of each kind in :data:`TOP_KINDS` (first match wins)."""
    import numpy as np

    top = _queries(weights, from_query).argmax(-1)
    pos = np.arange(from_query, weights.shape[1])[None, :]
    labels = np.select(
        [top == 0, top == pos, top == pos - 1, kinds.special[top], kinds.punctuation[top]],
        list(range(5)),
        default=5,
    )
    counts = np.bincount(labels.ravel(), minlength=len(TOP_KINDS))
    return {kind: int(counts[i]) for i, kind in enumerate(TOP_KINDS)}


def mean_rows(rows: Sequence[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


@dataclass(frozen=True)
class Recommendation:
    """The smallest sink count that holds most of the sink mass of the first 8 positions.

    A position's sink mass is the attention it draws beyond an even share (the ``even``
    column), so ordinary content attention to early words does not count.
    """

    sinks: int
    excess: list[float]
    """Mean attention beyond an even share, for positions 0..7."""
    shares: dict[int, float]
    """Mean share of the first k tokens over layers, for k in :data:`SINK_COUNTS`."""
    threshold: float

    @property
    def captured(self) -> float:
        """The chosen count's part of the first 8 positions' sink mass."""
        total = sum(self.excess)
        return sum(self.excess[: self.sinks]) / total if total else 1.0


def recommend(layer_rows: Sequence[Mapping[str, float]], threshold: float = 0.9) -> Recommendation:
    """``layer_rows``: :func:`layer_shares` rows, of every layer (and document) to weigh equally."""
    n = len(layer_rows)
    width = SINK_COUNTS[-1]
    excess = [sum(max(0.0, r[f"pos_{j}"] - r["even"]) for r in layer_rows) / n for j in range(width)]
    shares = {k: sum(r[f"first_{k}"] for r in layer_rows) / n for k in SINK_COUNTS}
    total = sum(excess)
    if total <= 0:
        return Recommendation(0, excess, shares, threshold)
    sinks = next(k for k in range(1, width + 1) if sum(excess[:k]) >= threshold * total - 1e-12)
    return Recommendation(sinks, excess, shares, threshold)
