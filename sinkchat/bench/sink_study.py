"""``sinkchat sinks``: which tokens a model's attention lands on, and how many sinks it needs.

Each document is evaluated in up to three forms, to separate position from content:
``text`` (the words alone, no special token), ``bos`` (the tokenizer's BOS first) and
``chat`` (a user message in the model's chat template, as sinkchat's cache holds it).
Shipped documents run from 26 to about 960 tokens; some begin with a rare letter (Z, X,
Qu), so a first token that still draws attention cannot be drawing it for its meaning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sinkchat.bench import sink_stats
from sinkchat.bench.report import Progress, write_csv, write_json
from sinkchat.errors import SinkchatError

if TYPE_CHECKING:
    import numpy as np

    from models.llama_model import LlamaModel

Variant = Literal["text", "bos", "chat"]
VARIANTS: tuple[Variant, ...] = ("text", "bos", "chat")
SHARE_KEYS = (
    *(f"pos_{j}" for j in range(sink_stats.SINK_COUNTS[-1])),
    *(f"first_{k}" for k in sink_stats.SINK_COUNTS),
    *("special", "punctuation", "local", "top_first", "even", "punctuation_even", "sliding"),
)


class SinkDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    title: str = ""
    source: str = ""
    text: str = Field(min_length=1)


def shipped_documents() -> list[SinkDocument]:
    raw = resources.files("sinkchat.bench").joinpath("data/sink_documents.json").read_text(encoding="utf-8")
    return [SinkDocument.model_validate(d) for d in json.loads(raw)]


def load_documents(paths: Sequence[Path] = (), *, shipped: bool = True) -> list[SinkDocument]:
    """The shipped documents, then each text file given (named after the file)."""
    docs = shipped_documents() if shipped else []
    for path in paths:
        try:
            text = Path(path).expanduser().read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise SinkchatError(f"cannot read the document {path}: {exc.strerror or exc}") from None
        try:
            docs.append(SinkDocument(name=Path(path).stem, title=Path(path).name, source=str(path), text=text.strip()))
        except ValidationError:
            raise SinkchatError(f"the document {path} is empty") from None
    if not docs:
        raise SinkchatError("no documents to read")
    return docs


class SinkStudyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variants: tuple[Variant, ...] = VARIANTS
    max_tokens: int = Field(1024, ge=32, description="longer documents are cut here")
    from_query: int = Field(16, ge=1, description="queries before this position are not counted")
    heatmap_document: str | None = Field(
        None, description="default: the first ≥ 64-token document with a rare first letter"
    )
    heatmap_layers: tuple[int, ...] | None = Field(None, description="default: six layers from first to last")
    threshold: float = Field(0.9, gt=0, le=1, description="share of the first-8 mass the recommended sinks must hold")
    threads: int | None = None


@dataclass
class DocumentResult:
    """One document in one form."""

    document: str
    variant: Variant
    pieces: list[str]
    layers: list[dict[str, float]]
    top_positions: np.ndarray
    top_kinds: dict[str, int]
    max_row_error: float
    """Largest |row sum − 1| over every layer and query: the capture's sanity check."""

    @property
    def n_tokens(self) -> int:
        return len(self.pieces)


@dataclass
class Heatmap:
    document: str
    variant: Variant
    pieces: list[str]
    layers: list[int]
    weights: np.ndarray
    """``(len(layers), n, n)``."""
    from_query: int


@dataclass
class StudyResult:
    model: str
    add_bos: bool
    bos: str | None
    config: SinkStudyConfig
    results: list[DocumentResult] = field(default_factory=list)
    heatmaps: list[Heatmap] = field(default_factory=list)
    window: int = 0
    """The model's sliding window (0: no sliding-window layers)."""
    sliding: set[int] = field(default_factory=set)
    """Layers seen to attend only within the window (in documents longer than it)."""

    def of(self, variant: Variant) -> list[DocumentResult]:
        return [r for r in self.results if r.variant == variant]

    @property
    def variants(self) -> list[Variant]:
        return [v for v in VARIANTS if self.of(v)]

    @property
    def main_variant(self) -> Variant:
        """The form the model reads when it continues text: with BOS first when its tokenizer adds
        one (Gemma never sees a text without it), else the plain text."""
        if self.add_bos and self.of("bos"):
            return "bos"
        return self.variants[0]


def document_tokens(model: LlamaModel, doc: SinkDocument, variant: Variant) -> list[int] | None:
    """The document's tokens in one form; None when the model has no such form (no BOS token)."""
    if variant == "text":
        return model.tokenize(doc.text, add_special=False, parse_special=False)
    if variant == "bos":
        if model.bos < 0:
            return None
        return [model.bos, *model.tokenize(doc.text, add_special=False, parse_special=False)]
    template = model.chat_template()
    if template is None:  # a base model: it is never read as a chat
        return None
    rendered = template.render([{"role": "user", "content": doc.text}], add_generation_prompt=True)
    bos_in_text = bool(template.bos_token) and rendered.startswith(template.bos_token)
    return model.tokenize(rendered, add_special=model.add_bos and not bos_in_text, parse_special=True)


def _is_special(model: LlamaModel, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_control(model.vocab, token))


def default_heatmap_layers(n_layer: int) -> list[int]:
    return sorted({0, 1, n_layer // 4, n_layer // 2, (3 * n_layer) // 4, n_layer - 1} & set(range(n_layer)))


def _heatmap_document(docs: Sequence[SinkDocument], lengths: dict[str, int], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in lengths:
            names = ", ".join(d.name for d in docs)
            raise SinkchatError(f"no document named {wanted!r} for the heat map (documents: {names})")
        return wanted
    rare = [d.name for d in docs if lengths[d.name] >= 64 and d.text[:1].upper() in "JQXZ"]
    long_enough = [d.name for d in docs if lengths[d.name] >= 64]
    return (rare or long_enough or [d.name for d in docs])[0]


def run_study(
    model: LlamaModel, docs: Sequence[SinkDocument], config: SinkStudyConfig, *, progress: bool = True
) -> StudyResult:
    """Capture every document in every form, shortest first, and reduce each to statistics."""
    from models.attention import capture_attention, max_tokens

    limit = min(config.max_tokens, model.n_ctx_train or config.max_tokens)
    if limit > max_tokens(model.n_layer):
        raise SinkchatError(
            f"--max-tokens {limit:,} is too long for {model.name}'s {model.n_layer} layers: "
            f"the attention maps would not fit in memory; use at most {max_tokens(model.n_layer):,}"
        )
    lengths = {d.name: len(document_tokens(model, d, "text") or []) for d in docs}
    docs = sorted(docs, key=lambda d: lengths[d.name])
    heatmap_doc = _heatmap_document(docs, lengths, config.heatmap_document)
    heat_layers = list(config.heatmap_layers or default_heatmap_layers(model.n_layer))
    bad = [layer for layer in heat_layers if not 0 <= layer < model.n_layer]
    if bad:
        raise SinkchatError(f"{model.name} has layers 0–{model.n_layer - 1}; cannot draw layers {bad}")
    bos = model.token_text(model.bos) if model.bos >= 0 else None
    study = StudyResult(model.name, model.add_bos, bos, config, window=model.n_swa)
    jobs = [(d, v) for d in docs for v in config.variants]
    with Progress(len(jobs), "documents", enabled=progress, unit="doc") as bar:
        for doc, variant in jobs:
            tokens = document_tokens(model, doc, variant)
            bar.update(1, doc=doc.name, form=variant)
            if tokens is None:
                continue
            tokens = tokens[:limit]
            if len(tokens) <= config.from_query:
                continue
            maps = capture_attention(model, tokens, threads=config.threads)
            pieces = [model.token_text(t) for t in tokens]
            kinds = sink_stats.TokenKinds.of(pieces, [_is_special(model, t) for t in tokens])
            w = maps.weights
            sliding = sink_stats.sliding_layers(w, study.window)
            study.sliding.update(sliding)
            windows = [study.window if layer in sliding else None for layer in range(len(w))]
            study.results.append(
                DocumentResult(
                    document=doc.name,
                    variant=variant,
                    pieces=pieces,
                    layers=sink_stats.layer_shares(w, kinds, config.from_query, windows),
                    top_positions=sink_stats.top_positions(w, config.from_query),
                    top_kinds=sink_stats.top_kinds(w, kinds, config.from_query),
                    max_row_error=float(abs(w.sum(-1) - 1).max()),
                )
            )
            if doc.name == heatmap_doc:
                study.heatmaps.append(
                    Heatmap(doc.name, variant, pieces, heat_layers, w[heat_layers].copy(), config.from_query)
                )
    if not study.results:
        raise SinkchatError(f"every document is shorter than {config.from_query + 1} tokens")
    return study


# -- summaries ---------------------------------------------------------------------------


def layer_means(results: Sequence[DocumentResult]) -> list[dict[str, Any]]:
    """Per layer, each share averaged over documents (each document counts once)."""
    n_layer = len(results[0].layers)
    return [
        {"layer": layer, **sink_stats.mean_rows([r.layers[layer] for r in results], SHARE_KEYS)}
        for layer in range(n_layer)
    ]


def recommendation(study: StudyResult) -> sink_stats.Recommendation:
    return sink_stats.recommend(layer_means(study.of(study.main_variant)), study.config.threshold)


def layer_kinds(study: StudyResult) -> list[dict[str, Any]]:
    """Sliding-window and global layers apart, in the main form: what each draws to the first token.

    A sliding layer only behaves as one in a document longer than its window, so its row
    averages those documents; global layers average every document.
    """
    if not study.sliding:
        return []
    results = study.of(study.main_variant)
    n_layer = len(results[0].layers)
    out = []
    for kind, layers in (
        ("sliding", sorted(study.sliding)),
        ("global", [layer for layer in range(n_layer) if layer not in study.sliding]),
    ):
        rows = [r.layers[layer] for r in results for layer in layers if kind == "global" or r.layers[layer]["sliding"]]
        if not layers or not rows:
            continue
        mean = sink_stats.mean_rows(rows, ("first_1", "top_first", "even", "local"))
        out.append({"kind": kind, "layers": layers, "rows": len(rows), **mean})
    return out


def first_share(results: Sequence[DocumentResult], skip_layers: int = 0) -> float:
    """The first token's share, averaged over documents and layers from ``skip_layers`` on."""
    rows = [row for r in results for row in r.layers[skip_layers:]]
    return sum(row["first_1"] for row in rows) / len(rows)


def top_first_fraction(results: Sequence[DocumentResult]) -> float:
    """How often the first token is a query's most attended key (all layers, counted queries)."""
    first = sum(int(r.top_positions[0]) for r in results)
    total = sum(int(r.top_positions.sum()) for r in results)
    return first / total


def bos_verdict(study: StudyResult) -> str:
    """Whether the tokenizer adds a BOS, and whether a BOS in first place draws more than a word does."""
    parts = []
    if study.bos is None:
        parts.append("this model has no BOS token")
    else:
        parts.append(f"the tokenizer {'adds' if study.add_bos else 'does not add'} a BOS ({study.bos!r})")
        text, bos = study.of("text"), study.of("bos")
        if text and bos:
            with_bos, without = first_share(bos, 2), first_share(text, 2)
            ratio = with_bos / without if without else float("inf")
            if ratio > 1.25:
                how = "a stronger sink than a word in first place"
            elif ratio < 0.75:
                how = "a weaker sink than a word in first place"
            else:
                how = "a sink like any first token: the first position draws the attention, whatever token holds it"
            parts.append(
                f"placed first, it is {how} ({with_bos:.0%} of attention in layers 2 and up, "
                f"against {without:.0%} for the text's own first token)"
            )
    chat = study.of("chat")
    if chat:
        parts.append(f"in a chat the template's first token {chat[0].pieces[0]!r} draws {first_share(chat, 2):.0%}")
    return "; ".join(parts)


def document_rows(study: StudyResult) -> list[dict[str, Any]]:
    """One row per document: its length, first word, and the first token's share in each form."""
    rows: dict[str, dict[str, Any]] = {}
    for r in study.results:
        row = rows.setdefault(r.document, {"document": r.document})
        if r.variant == "text" or "tokens" not in row:
            row["tokens"] = r.n_tokens
            row["first_token"] = r.pieces[0]
        row[f"{r.variant}_first"] = first_share([r], 2)
        row[f"{r.variant}_top_first"] = top_first_fraction([r])
        row.setdefault("even", r.layers[0]["even"])
    return list(rows.values())


def kind_rows(study: StudyResult) -> list[dict[str, Any]]:
    rows = []
    for variant in study.variants:
        counts = {k: sum(r.top_kinds[k] for r in study.of(variant)) for k in sink_stats.TOP_KINDS}
        total = sum(counts.values())
        rows.append({"variant": variant, **{k: v / total for k, v in counts.items()}})
    return rows


def write_results(study: StudyResult, out: Path) -> dict[str, Path | None]:
    from sinkchat.bench import plots

    per_layer = [
        {"document": r.document, "variant": r.variant, "tokens": r.n_tokens, **row}
        for r in study.results
        for row in r.layers
    ]
    means = [{"variant": v, **row} for v in study.variants for row in layer_means(study.of(v))]
    top = [
        {"variant": v, "position": "16+" if i == sink_stats.TOP_POSITIONS else str(i), "count": int(count)}
        for v in study.variants
        for i, count in enumerate(sum(r.top_positions for r in study.of(v)))
    ]
    rec = recommendation(study)
    kinds = kind_rows(study)
    files: dict[str, Path | None] = {
        "layers": write_csv(out / "sinks_layers.csv", per_layer),
        "summary": write_csv(out / "sinks_summary.csv", means),
        "documents": write_csv(out / "sinks_documents.csv", document_rows(study)),
        "top": write_csv(out / "sinks_top.csv", top),
        "top_kinds": write_csv(out / "sinks_top_kinds.csv", kinds),
        "recommendation": write_json(
            out / "sinks_recommendation.json",
            {
                "model": study.model,
                "sink_tokens": rec.sinks,
                "first_k_share": {str(k): v for k, v in rec.shares.items()},
                "captured_of_first_8": rec.captured,
                "threshold": rec.threshold,
                "bos": bos_verdict(study),
                "top_first_fraction": {v: top_first_fraction(study.of(v)) for v in study.variants},
                "read_as": study.main_variant,
                "sliding_window": study.window,
                "layers_by_kind": layer_kinds(study),
            },
        ),
    }
    if plots.available():
        from sinkchat.bench import sink_plots

        baselines = {v: layer_means(study.of(v))[0]["even"] for v in study.variants}
        n_layer = len(study.results[0].layers)
        global_layers = [layer for layer in range(n_layer) if layer not in study.sliding] if study.sliding else []
        files["layers_png"] = sink_plots.sink_layers(
            means,
            study.variants,
            out / "sinks_layers.png",
            title=study.model,
            baselines=baselines,
            global_layers=global_layers,
        )
        files["top_png"] = sink_plots.sink_top(top, kinds, out / "sinks_top.png", title=study.model)
        for heat in study.heatmaps:
            files[f"heatmap_{heat.variant}"] = sink_plots.sink_heatmap(
                heat, out / f"sinks_heatmap_{heat.variant}.png", title=study.model
            )
    return files
