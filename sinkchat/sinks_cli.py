"""``sinkchat sinks [MODEL]``: where a model's attention lands, and how many sink tokens it needs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sinkchat.bench_cli import open_model, positive_int, threads_option

if TYPE_CHECKING:
    from sinkchat.bench.sink_study import StudyResult

FORMS = ("text", "bos", "chat")
"""As in :mod:`sinkchat.bench.sink_study` (not imported here: ``sinkchat --help`` stays fast)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sinks",
        help="see the attention sinks inside a GGUF model; recommend a sink count",
        description="Evaluate documents of increasing length with attention capture (flash attention off), "
        "report per layer how much attention goes to the first 1/2/4/8 tokens, special tokens and "
        "punctuation, which token is most attended, and how many sink tokens the model needs. "
        "Writes CSV, and PNG with the bench extra (pip install 'sinkchat[bench]'), into --out.",
    )
    p.add_argument("model", nargs="?", help="GGUF file (default: the embedded SmolLM2)")
    p.add_argument("-o", "--out", type=Path, default=Path("sinkchat-bench") / "sinks", help="results folder")
    p.add_argument("-d", "--doc", type=Path, action="append", default=[], metavar="FILE", help="add a text file")
    p.add_argument("--only-docs", action="store_true", help="read only the --doc files, not the shipped documents")
    p.add_argument("--forms", nargs="+", choices=FORMS, default=list(FORMS), help="forms of each document")
    p.add_argument("--max-tokens", type=positive_int, default=1024, help="cut longer documents here")
    p.add_argument("--from-query", type=positive_int, default=16, help="count queries from this position on")
    p.add_argument("--heatmap", metavar="DOC", help="document of the heat maps (default: one with a rare first letter)")
    p.add_argument("--layers", type=int, nargs="+", metavar="L", help="layers of the heat maps (default: six)")
    p.add_argument("-t", "--threads", type=positive_int, help="CPU threads (default: physical cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def layer_rows(study: StudyResult) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Per layer: the shares of the plain text, and the chat form's first-token and special shares."""
    from sinkchat.bench.sink_stats import SINK_COUNTS
    from sinkchat.bench.sink_study import layer_means

    main = study.main_variant
    columns = [("layer", "layer")] + ([("kind", "kind")] if study.sliding else [])
    columns += [(f"first_{k}", f"first {k}") for k in SINK_COUNTS]
    columns += [("punctuation", "punct."), ("local", "self+prev"), ("top_first", "top=first")]
    rows = [{k: (_pct(v) if k != "layer" else v) for k, v in row.items()} for row in layer_means(study.of(main))]
    for row in rows:
        row["kind"] = f"window {study.window}" if row["layer"] in study.sliding else "global"
    if study.of("chat") and main != "chat":
        for row, chat in zip(rows, layer_means(study.of("chat")), strict=True):
            row["chat_first"] = _pct(chat["first_1"])
            row["chat_special"] = _pct(chat["special"])
        columns += [("chat_first", "chat: first 1"), ("chat_special", "chat: special")]
    return rows, columns


def document_table(study: StudyResult) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from sinkchat.bench.sink_study import document_rows

    rows = document_rows(study)
    columns = [("document", "document"), ("tokens", "tokens"), ("first_token", "first token")]
    for row in rows:
        row["first_token"] = repr(row["first_token"])  # shows white space, never executes escapes
        for key in list(row):
            if key.endswith(("_first", "_top_first")) or key == "even":
                row[key] = _pct(row[key])
    columns += [(f"{v}_first", f"{v}: first") for v in study.variants]
    columns += [("even", "even share"), (f"{study.main_variant}_top_first", "top=first")]
    return rows, columns


def run(args: argparse.Namespace) -> int:
    from sinkchat.bench.report import output_dir, table
    from sinkchat.bench.sink_study import (
        SinkStudyConfig,
        bos_verdict,
        layer_kinds,
        layer_means,
        load_documents,
        recommendation,
        run_study,
        write_results,
    )
    from sinkchat.bench_cli import finish

    config = SinkStudyConfig(
        variants=tuple(args.forms),
        max_tokens=args.max_tokens,
        from_query=args.from_query,
        heatmap_document=args.heatmap,
        heatmap_layers=tuple(args.layers) if args.layers else None,
        **threads_option(args),
    )
    docs = load_documents(args.doc, shipped=not args.only_docs)
    out = output_dir(args.out)
    with open_model(args) as model:
        print(f"{model.name} · {model.n_layer} layers · {len(docs)} documents · forms: {', '.join(config.variants)}")
        study = run_study(model, docs, config, progress=not args.quiet)
    rows, columns = layer_rows(study)
    print(
        f"\nShare of a query's attention, mean over documents (queries from position {config.from_query} on), "
        f"read as {study.main_variant}:"
    )
    print(table(rows, columns))
    means = layer_means(study.of(study.main_variant))
    even = next((m for m in means if m["layer"] not in study.sliding), means[0])
    print(
        f"Spread evenly, a query would give {_pct(even['even'])} to the first token "
        f"and {_pct(even['punctuation_even'])} to punctuation."
    )
    for kind in layer_kinds(study):
        layers = kind["layers"]
        print(
            f"{kind['kind'].capitalize()} layers ({len(layers)}: {_ranges(layers)}): the first token draws "
            f"{_pct(kind['first_1'])} and is the most attended key for {_pct(kind['top_first'])} of queries "
            f"(an even share would be {_pct(kind['even'])})"
            + (
                f" in documents longer than their window; past {study.window} tokens they cannot see it"
                if kind["kind"] == "sliding"
                else ""
            )
        )
    rows, columns = document_table(study)
    print("\nThe first token's share per document (layers 2 and up):")
    print(table(rows, columns))
    rec = recommendation(study)
    kinds = ", ".join(f"{k} {_pct(v)}" for k, v in _kinds(study).items())
    print(f"\nMost attended key ({study.main_variant}): {kinds}")
    shares = "/".join(_pct(v) for v in rec.shares.values())
    if sum(rec.excess) > 0:
        print(
            f"Recommended sink tokens: {rec.sinks} (read as {study.main_variant}: they hold {rec.captured:.0%} of "
            f"the attention the first 8 positions draw beyond an even share; first 1/2/4/8 take {shares})"
        )
    else:
        print(
            f"Recommended sink tokens: 0 (read as {study.main_variant}, the first 8 positions draw no more than "
            f"an even share; first 1/2/4/8 take {shares})"
        )
    print(f"BOS: {bos_verdict(study)}")
    if rec.sinks:
        print(
            f"To chat with it: sinkchat run --sink-tokens {rec.sinks}  (or sink_tokens = {rec.sinks} in the settings)"
        )
    worst = max(r.max_row_error for r in study.results)
    if worst > 1e-3:
        print(f"warning: attention rows sum to 1 only within {worst:.2g}", file=sys.stderr)
    # The capture turns flash attention off: it never materialises the attention probabilities.
    return finish(out, "sinks", write_results(study, out), config, model=model.name, flash_attn_used=["off"])


def _ranges(layers: list[int]) -> str:
    """``0-4, 6-10, 12`` for people."""
    parts: list[str] = []
    start = prev = None
    for layer in [*layers, None]:
        if layer is not None and prev is not None and layer == prev + 1:
            prev = layer
            continue
        if start is not None:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
        start = prev = layer
    return ", ".join(parts)


def _kinds(study: StudyResult) -> dict[str, float]:
    from sinkchat.bench.sink_study import kind_rows

    row = next(r for r in kind_rows(study) if r["variant"] == study.main_variant)
    return {k: v for k, v in row.items() if k != "variant"}
