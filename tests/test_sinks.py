"""``sinkchat sinks``: the statistics on hand-made attention maps, then the real capture on SmolLM2.

The slow tests check what the seed study reports for decoder models: every attention row
sums to 1; beyond the first layers the first token draws a large share, even when it is a
rare letter; and the most attended key is, far more often than any other, the first token.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sinkchat.bench import plots, sink_stats
from sinkchat.bench.sink_stats import TokenKinds, layer_shares, recommend, top_kinds, top_positions
from sinkchat.bench.sink_study import _heatmap_document, load_documents, shipped_documents
from sinkchat.cli import main
from sinkchat.errors import SinkchatError


def _causal(n: int, first: float) -> np.ndarray:
    """Rows giving ``first`` to key 0 and the rest evenly to keys 1..q (row 0: all on key 0)."""
    w = np.zeros((n, n), dtype=np.float32)
    w[0, 0] = 1
    for q in range(1, n):
        w[q, 0] = first
        w[q, 1 : q + 1] = (1 - first) / q
    return w


def _kinds(n: int, special: tuple[int, ...] = (), punct: tuple[int, ...] = ()) -> TokenKinds:
    return TokenKinds(np.isin(np.arange(n), special), np.isin(np.arange(n), punct))


# -- fast: the statistics -------------------------------------------------------------------


def test_punctuation_tokens() -> None:
    for piece in (".", ",\n", " —", '!"', "\n\n", "…"):
        assert sink_stats.is_punctuation(piece), piece
    for piece in ("", "a", " the", "X", "3"):
        assert not sink_stats.is_punctuation(piece), piece


def test_layer_shares_on_a_known_map() -> None:
    n, start = 40, 8
    weights = np.stack([_causal(n, 0.0), _causal(n, 0.6)])
    rows = layer_shares(weights, _kinds(n, special=(0, 5), punct=(0, 3)), start)
    qs = np.arange(start, n)
    flat, sink = rows
    assert flat["first_1"] == pytest.approx(0.0)
    assert flat["pos_1"] == pytest.approx(np.mean(1 / qs))
    assert flat["first_8"] == pytest.approx(np.mean(7 / qs))
    assert sink["first_1"] == pytest.approx(0.6)
    assert sink["first_4"] == pytest.approx(0.6 + np.mean(0.4 * 3 / qs), rel=1e-5)
    assert sink["top_first"] == 1.0 and flat["top_first"] == 0.0
    # Special tokens include the first; punctuation never counts it (it is the sink).
    assert sink["special"] == pytest.approx(0.6 + np.mean(0.4 / qs), rel=1e-5)
    assert sink["punctuation"] == pytest.approx(np.mean(0.4 / qs), rel=1e-5)
    assert sink["local"] == pytest.approx(np.mean(0.8 / qs), rel=1e-5)
    assert sink["even"] == pytest.approx(np.mean(1 / (qs + 1)))
    assert sink["punctuation_even"] == pytest.approx(np.mean(1 / (qs + 1)))  # one punctuation key after the first


def _windowed(n: int, window: int, first: float) -> np.ndarray:
    """A sliding-window layer: ``first`` to key 0 while it is visible, the rest evenly over the visible keys."""
    w = np.zeros((n, n), dtype=np.float32)
    for q in range(n):
        lo = max(0, q - window + 1)
        if lo == 0:
            w[q] = _causal(n, first)[q]
        else:
            w[q, lo : q + 1] = 1 / (q + 1 - lo)
    return w


def test_sliding_window_layers_are_told_from_their_masks() -> None:
    n, window = 64, 16
    weights = np.stack([_causal(n, 0.5), _windowed(n, window, 0.5), _causal(n, 0.0)])
    assert sink_stats.sliding_layers(weights, window) == [1]
    assert sink_stats.sliding_layers(weights[:, :window, :window], window) == []  # too short to tell
    assert sink_stats.sliding_layers(weights, 0) == []


def test_the_even_baseline_counts_only_the_keys_a_query_can_see() -> None:
    n, window, start = 64, 16, 8
    weights = np.stack([_causal(n, 0.5), _windowed(n, window, 0.5)])
    kinds = _kinds(n, punct=tuple(range(1, n, 4)))
    plain, sliding = layer_shares(weights, kinds, start, windows=[None, window])
    qs = np.arange(start, n)
    assert plain["even"] == pytest.approx(np.mean(1 / (qs + 1))) and plain["sliding"] == 0
    # Past the window the first key is out of sight: its even share is 0 there, not 1/(q+1).
    assert sliding["even"] == pytest.approx(np.mean(np.where(qs < window, 1 / (qs + 1), 0.0)))
    assert sliding["sliding"] == 1 and sliding["first_1"] < plain["first_1"]
    visible_punct = [sum(1 for k in range(max(0, q - window + 1), q + 1) if k % 4 == 1) for q in qs]
    seen = np.minimum(qs + 1, window)
    assert sliding["punctuation_even"] == pytest.approx(np.mean(np.array(visible_punct) / seen))


def test_early_queries_are_not_counted() -> None:
    with pytest.raises(ValueError, match="no queries"):
        layer_shares(np.stack([_causal(8, 0.5)]), _kinds(8), 8)
    with pytest.raises(ValueError, match="1 or more"):
        top_positions(np.stack([_causal(8, 0.5)]), 0)


def test_top_positions_and_kinds() -> None:
    n = 30
    sink = _causal(n, 0.6)
    local = np.tril(np.ones((n, n), dtype=np.float32)) * 0.01
    local[np.arange(n), np.arange(n)] = 1  # each query on itself
    weights = np.stack([sink, local])
    counts = top_positions(weights, 4)
    assert counts.sum() == 2 * (n - 4)
    assert counts[0] == n - 4  # the sink layer
    assert counts[sink_stats.TOP_POSITIONS] == n - sink_stats.TOP_POSITIONS  # queries 16.. on themselves
    assert counts[4:16].sum() == 12
    kinds = top_kinds(weights, _kinds(n, special=(0,), punct=tuple(range(n))), 4)
    # The first token wins over "special"; a query on itself is "itself", not its punctuation.
    assert kinds == {"first": n - 4, "itself": n - 4, "previous": 0, "special": 0, "punctuation": 0, "other": 0}


def _rows(excess: list[float], even: float = 0.01) -> list[dict[str, float]]:
    row = {f"pos_{j}": even + (excess[j] if j < len(excess) else 0.0) for j in range(8)}
    row.update({f"first_{k}": sum(row[f"pos_{j}"] for j in range(k)) for k in sink_stats.SINK_COUNTS})
    return [{**row, "even": even}]


def test_recommendation_counts_only_attention_beyond_an_even_share() -> None:
    assert recommend(_rows([0.5])).sinks == 1
    assert recommend(_rows([0.3, 0.2])).sinks == 2
    assert recommend(_rows([0.1, 0.1, 0.1, 0.1])).sinks == 4
    assert recommend(_rows([0.1, 0.1, 0.1, 0.1]), threshold=0.5).sinks == 2
    none = recommend(_rows([]))
    assert none.sinks == 0 and none.captured == 1.0
    rec = recommend(_rows([0.45, 0.0, 0.05]))
    assert rec.sinks == 1 and rec.captured == pytest.approx(0.9)
    assert rec.shares[1] == pytest.approx(0.46)


def test_shipped_documents() -> None:
    docs = shipped_documents()
    assert len(docs) >= 8
    assert len({d.name for d in docs}) == len(docs)
    assert all(d.source and d.title for d in docs)
    lengths = [len(d.text) for d in docs]
    assert lengths == sorted(lengths) and lengths[-1] > 20 * lengths[0]
    rare = [d.name for d in docs if d.text[0] in "JQXZ"]
    assert len(rare) >= 3, rare
    assert _heatmap_document(docs, {d.name: len(d.text) for d in docs}, None) in rare


def test_documents_from_files(tmp_path: Path) -> None:
    doc = tmp_path / "mine.txt"
    doc.write_text("  Quiet quokkas queue.\n", encoding="utf-8")
    docs = load_documents([doc], shipped=False)
    assert [(d.name, d.text) for d in docs] == [("mine", "Quiet quokkas queue.")]
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(SinkchatError, match="empty"):
        load_documents([tmp_path / "blank.txt"])
    with pytest.raises(SinkchatError, match="cannot read"):
        load_documents([tmp_path / "missing.txt"])
    with pytest.raises(SinkchatError, match="no documents"):
        load_documents([], shipped=False)


def test_capture_refuses_maps_that_would_not_fit_in_memory() -> None:
    from types import SimpleNamespace

    from models.attention import MAX_MAP_BYTES, capture_attention, map_bytes, max_tokens
    from models.errors import ModelError

    limit = max_tokens(30)
    assert map_bytes(30, limit) <= MAX_MAP_BYTES < map_bytes(30, limit + 1)
    with pytest.raises(ModelError, match=f"at most {limit:,} tokens"):
        capture_attention(SimpleNamespace(n_layer=30, name="m"), [1] * (limit + 1))  # type: ignore[arg-type]


def test_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sinks", "--doc", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "out")]) == 2
    assert "cannot read the document" in capsys.readouterr().err
    assert main(["sinks", "--only-docs", "-o", str(tmp_path / "out")]) == 2
    assert "no documents" in capsys.readouterr().err
    assert main(["sinks", str(tmp_path / "none.gguf"), "-o", str(tmp_path / "out")]) == 2
    assert "error" in capsys.readouterr().err


# -- slow: SmolLM2 ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path):
    from models.llama_model import LlamaModel

    with LlamaModel(smollm2_path) as model:
        yield model


@pytest.mark.slow
def test_captured_attention_rows_sum_to_one(smollm2) -> None:
    from models.attention import capture_attention

    doc = next(d for d in shipped_documents() if d.name == "quartz")
    tokens = smollm2.tokenize(doc.text)
    maps = capture_attention(smollm2, tokens, threads=2)
    n = len(tokens)
    assert maps.weights.shape == (smollm2.n_layer, n, n)
    assert np.isfinite(maps.weights).all()
    np.testing.assert_allclose(maps.weights.sum(-1), 1.0, atol=1e-4)  # every layer, every query
    assert maps.padding_mass < 1e-6  # masked cache cells beyond the text get nothing
    assert np.abs(np.triu(maps.weights, k=1)).max() == 0  # causal: no query sees a later key


@pytest.mark.slow
def test_the_first_token_is_a_sink_beyond_the_first_layers(smollm2) -> None:
    from models.attention import capture_attention

    for name in ("xylophone", "genesis"):  # a rare first letter ('X'), and the longest text
        doc = next(d for d in shipped_documents() if d.name == name)
        tokens = smollm2.tokenize(doc.text)[:512]
        rows = layer_shares(capture_attention(smollm2, tokens, threads=2).weights, _kinds(len(tokens)), 16)
        even = rows[0]["even"]
        early = np.mean([r["first_1"] for r in rows[:2]])
        later = [r["first_1"] for r in rows[2:]]
        assert early < 0.05, (name, early)
        assert np.mean(later) > 0.3, (name, later)
        assert np.mean(later) > 10 * even
        # Most later layers, not a few outliers: the sink is a property of the model.
        assert sum(share > 10 * even for share in later) >= 0.8 * len(later), later


@pytest.mark.slow
def test_sinks_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sinkchat.bench.report import read_csv

    out = tmp_path / "sinks"
    assert main(["sinks", "-q", "-t", "2", "--max-tokens", "160", "-o", str(out), "--layers", "0", "12"]) == 0
    printed = capsys.readouterr().out
    assert "Recommended sink tokens: 1" in printed
    assert "does not add a BOS" in printed  # SmolLM2's tokenizer adds none

    rec = json.loads((out / "sinks_recommendation.json").read_text())
    assert rec["sink_tokens"] == 1 and rec["captured_of_first_8"] > 0.9
    # The histogram of most attended keys is dominated by the first token, in every form.
    top = read_csv(out / "sinks_top.csv")
    for form in ("text", "bos", "chat"):
        counts = {r["position"]: int(r["count"]) for r in top if r["variant"] == form}
        total = sum(counts.values())
        assert counts["0"] > 0.5 * total, (form, counts)
        assert counts["0"] > 10 * max(c for p, c in counts.items() if p not in ("0", "16+")), (form, counts)
    layers = read_csv(out / "sinks_layers.csv")
    assert {r["variant"] for r in layers} == {"text", "bos", "chat"}
    assert len({r["document"] for r in layers}) == len(shipped_documents())
    docs = {r["document"]: r for r in read_csv(out / "sinks_documents.csv")}
    assert docs["xylophone"]["first_token"] == "X" and float(docs["xylophone"]["text_first"]) > 0.3
    if plots.available():
        for name in ("sinks_layers.png", "sinks_top.png", "sinks_heatmap_text.png", "sinks_heatmap_chat.png"):
            data = (out / name).read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert main(["sinks", "-q", "--heatmap", "nope", "-o", str(out)]) == 2
    assert "no document named 'nope'" in capsys.readouterr().err
    assert main(["sinks", "-q", "--max-tokens", "100000", "-o", str(out)]) == 2
    assert "would not fit in memory; use at most 4,230" in capsys.readouterr().err


@pytest.mark.slow
def test_own_documents_and_hostile_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "hostile.txt"
    doc.write_text("\x1b[2J\x1b[31mRed alert. " + "The quick brown fox jumps over the lazy dog. " * 6, encoding="utf-8")
    out = tmp_path / "out"
    assert main(["sinks", "-q", "--only-docs", "--doc", str(doc), "--forms", "text", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "\x1b" not in printed  # token text is shown escaped, never sent to the terminal raw
    assert "hostile" in printed and "Recommended sink tokens:" in printed
    assert (out / "sinks_heatmap_text.png").exists() == plots.available()


@pytest.mark.slow
def test_sinks_on_gemma_reads_it_with_bos_and_reports_sliding_and_global_layers(
    gemma_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gemma 3 never reads a text without BOS: recommend from that form; its 3 global layers hold the sink."""
    out = tmp_path / "gsinks"
    assert main(["sinks", str(gemma_path), "-o", str(out), "-q", "--forms", "text", "bos"]) == 0
    printed = capsys.readouterr().out
    assert "read as bos" in printed and "Recommended sink tokens: 1" in printed
    assert "Global layers (3: 5, 11, 17)" in printed and "Sliding layers (15:" in printed
    rec = json.loads((out / "sinks_recommendation.json").read_text())
    assert rec["read_as"] == "bos" and rec["sliding_window"] == 512 and rec["sink_tokens"] == 1
    kinds = {k["kind"]: k for k in rec["layers_by_kind"]}
    assert kinds["global"]["layers"] == [5, 11, 17] and kinds["global"]["top_first"] > 0.9
    assert kinds["global"]["first_1"] > 3 * kinds["sliding"]["first_1"]
    assert rec["top_first_fraction"]["text"] < 0.05 < 0.5 < rec["top_first_fraction"]["bos"]  # no BOS, no sink
