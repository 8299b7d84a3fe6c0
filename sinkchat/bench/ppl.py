"""``sinkchat bench ppl``: log-perplexity and memory against input length, per cache policy.

The attention-sinks perplexity experiment on a GGUF model: a long text streams through a
cache of ``n_ctx`` tokens in chunks; every token's negative log-likelihood is taken from
the logits of the token before it.  Chunks (not single tokens) keep it fast; every policy
uses the same chunks, and ``recompute`` rebuilds the window for every chunk, so each chunk
sees the same number of preceding tokens under every policy that evicts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from sinkchat.bench.report import Progress, interleave, rss_growth, segment_rates, spread
from sinkchat.bench.streams import STREAM_POLICIES, CacheFull, StreamPolicy, dense_size, open_stream
from sinkchat.stats import process_rss


class PplConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[StreamPolicy, ...] = STREAM_POLICIES
    n_ctx: int = Field(256, ge=16, description="the cache size of every evicting policy")
    sinks: int = Field(4, ge=0)
    sink_sweep: tuple[int, ...] = ()
    """Sink counts to run the ``sinks`` policy with (StreamingLLM's table); empty: just ``sinks``."""
    discard: int | None = Field(None, ge=1, description="tokens one shift frees (default: the chunk size)")
    chunk: int | None = Field(None, ge=1, description="tokens evaluated per step (default: n_ctx / 8)")
    max_tokens: int = Field(20_000, ge=2)
    recompute_tokens: int | None = Field(None, ge=2, description="stop recompute earlier (it is the slow one)")
    dense_ctx: int | None = Field(None, ge=16, description="dense cache size (default: the training context)")
    threads: int = Field(default_factory=default_threads)

    def chunk_size(self) -> int:
        return self.chunk or max(1, self.n_ctx // 8)


class Run(BaseModel):
    """One policy's pass over the text."""

    policy: str
    label: str
    sinks: int
    n_ctx: int
    positions: list[int] = Field(default_factory=list)
    """Tokens read so far at the end of each chunk."""
    nll: list[float] = Field(default_factory=list)
    """Mean negative log-likelihood of each chunk's scored tokens."""
    counts: list[int] = Field(default_factory=list)
    rss: list[int] = Field(default_factory=list)
    cached: list[int] = Field(default_factory=list)
    seconds: float = 0.0
    stopped: str | None = None
    fallbacks: int = 0
    """Shifts done by reading the cache again because it could not shift: then a window is really a recompute."""
    swa_full: bool = False
    flash_attn: str = "auto"
    chunk: int = 0
    """Tokens evaluated per step, as actually used."""
    chunk_seconds: list[float] = Field(default_factory=list)
    """Time of each scored chunk: the spread of the speed (min / median / max over a tenth of the run)."""

    @property
    def tokens(self) -> int:
        return self.positions[-1] if self.positions else 0

    def ppl(self, start: int = 0, end: int | None = None) -> float | None:
        """Perplexity over the tokens scored in chunks ending within ``(start, end]``."""
        total = n = 0.0
        for pos, nll, count in zip(self.positions, self.nll, self.counts, strict=True):
            if pos > start and (end is None or pos <= end):
                total += nll * count
                n += count
        return float(np.exp(total / n)) if n else None


def nll_of(logits: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Negative log-likelihood of ``targets[i]`` under the row ``logits[i]``."""
    rows = logits.astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]
    return log_z - rows[np.arange(len(targets)), np.asarray(targets)]


def run_policy(
    model: LlamaModel,
    tokens: Sequence[int],
    policy: StreamPolicy,
    config: PplConfig,
    *,
    sinks: int | None = None,
    progress: bool = True,
) -> Run:
    """Stream ``tokens`` through one policy alone and record the NLL per chunk."""
    run = new_run(model, tokens, policy, config, sinks)
    with Progress(run_length(run, tokens, config), run.label, enabled=progress) as bar:
        for _ in policy_steps(model, tokens, run, config, bar):
            pass
    return run


def new_run(
    model: LlamaModel, tokens: Sequence[int], policy: StreamPolicy, config: PplConfig, sinks: int | None = None
) -> Run:
    sinks = config.sinks if sinks is None else sinks
    n_ctx = config.n_ctx
    if policy == "dense":
        n_ctx = min(dense_size(model, config.dense_ctx, config.n_ctx), len(tokens))
    label = policy if policy != "sinks" or not config.sink_sweep else f"sinks={sinks}"
    return Run(policy=policy, label=label, sinks=sinks if policy == "sinks" else 0, n_ctx=n_ctx)


def run_length(run: Run, tokens: Sequence[int], config: PplConfig) -> int:
    """Tokens ``run`` will read (dense stops once its cache is full)."""
    if run.policy == "dense":
        return min(len(tokens), run.n_ctx)
    if run.policy == "recompute" and config.recompute_tokens:
        return min(len(tokens), config.recompute_tokens)
    return len(tokens)


def policy_steps(
    model: LlamaModel, tokens: Sequence[int], run: Run, config: PplConfig, bar: Progress
) -> Iterator[None]:
    """Stream ``tokens`` through ``run``'s policy, one chunk per step (so policies can be interleaved);
    only the time inside its own steps counts as the run's."""
    chunk = config.chunk_size()
    limit = len(tokens)
    if run.policy == "recompute" and config.recompute_tokens:
        limit = min(limit, config.recompute_tokens)
    options = LoadOptions(n_ctx=run.n_ctx, n_threads=config.threads, n_batch=max(chunk, min(512, run.n_ctx)))
    with LlamaContext(model, options) as ctx:
        bos = model.bos if model.add_bos and model.bos >= 0 else None
        stream = open_stream(run.policy, ctx, sinks=run.sinks, discard=config.discard or chunk, bos=bos)  # type: ignore[arg-type]
        step = min(chunk, stream.max_chunk())
        run.chunk, run.swa_full, run.flash_attn = step, ctx.swa_full, options.flash_attn
        previous: np.ndarray | None = None
        for at in range(0, limit, step):
            started = time.perf_counter()
            piece = list(tokens[at : at + step])
            try:
                stream.feed(piece, "all")
            except CacheFull:
                run.stopped = f"cache full at {at:,} tokens (n_ctx {run.n_ctx:,})"
                break
            logits = ctx.all_logits(len(piece))
            rows = logits[:-1] if previous is None else np.vstack([previous, logits[:-1]])
            targets = piece[1:] if previous is None else piece
            previous = logits[-1:]
            elapsed = time.perf_counter() - started
            run.seconds += elapsed
            if len(targets):
                losses = nll_of(rows, targets)
                run.positions.append(at + len(piece))
                run.nll.append(float(losses.mean()))
                run.counts.append(len(targets))
                run.rss.append(process_rss())
                run.cached.append(stream.n_cached)
                run.chunk_seconds.append(elapsed)
            bar.update(len(piece))
            yield
        run.fallbacks = stream.fallbacks


def run_ppl(model: LlamaModel, tokens: Sequence[int], config: PplConfig, *, progress: bool = True) -> list[Run]:
    """Every policy (and, with ``sink_sweep``, the sinks policy once per sink count) in one process,
    interleaved chunk by chunk (:func:`.report.interleave`)."""
    runs: list[Run] = []
    for policy in config.policies:
        if policy == "sinks" and config.sink_sweep:
            runs += [new_run(model, tokens, "sinks", config, sinks=n) for n in config.sink_sweep]
        else:
            runs.append(new_run(model, tokens, policy, config))
    with Progress(sum(run_length(r, tokens, config) for r in runs), "ppl", enabled=progress) as bar:
        interleave([policy_steps(model, tokens, run, config, bar) for run in runs])
    return runs


COLUMNS = (
    ("policy", "policy"),
    ("tokens", "tokens"),
    ("ppl", "PPL"),
    ("ppl_after_fill", "PPL after fill"),
    ("ppl_common", "PPL same span"),
    ("ppl_last_tenth", "PPL last 10%"),
    ("rss_full_mib", "RSS MiB"),
    ("rss_growth_mib", "RSS growth"),
    ("tok_per_s_min", "tok/s min"),
    ("tok_per_s_median", "median"),
    ("tok_per_s_max", "max"),
    ("fallbacks", "re-reads"),
    ("stopped", ""),
)
"""``(summary key, heading)`` of the terminal table."""


def common_end(runs: Sequence[Run]) -> int:
    """The tokens every evicting run read: perplexities over this range compare like with like."""
    return min((r.tokens for r in runs if r.policy != "dense"), default=0)


def summary(run: Run, n_ctx: int, common: int | None = None) -> dict[str, object]:
    """One row per run: perplexity overall, after the cache first filled, over the range all
    evicting runs read (``common``), and over the last tenth; memory once the cache was full.

    RSS is the process's (see :func:`~sinkchat.bench.report.rss_growth`).
    """
    last_tenth = run.tokens - run.tokens // 10
    full = next((i for i, pos in enumerate(run.positions) if pos >= min(n_ctx, run.n_ctx)), 0)
    rss = run.rss[full:]
    rates = spread(segment_rates(run.counts, run.chunk_seconds))
    return {
        "policy": run.label,
        "sinks": run.sinks,
        "n_ctx": run.n_ctx,
        "tokens": run.tokens,
        "ppl": run.ppl(),
        "ppl_after_fill": run.ppl(start=n_ctx),
        "ppl_common": run.ppl(start=n_ctx, end=common) if common and run.policy != "dense" else None,
        "ppl_last_tenth": run.ppl(start=last_tenth),
        "rss_full_mib": rss[0] / 2**20 if rss else None,
        "rss_max_mib": max(rss) / 2**20 if rss else None,
        "rss_growth_mib": rss_growth(rss) / 2**20 if rss else None,
        "tok_per_s": run.tokens / run.seconds if run.seconds else None,
        "tok_per_s_min": rates[0],
        "tok_per_s_median": rates[1],
        "tok_per_s_max": rates[2],
        "fallbacks": run.fallbacks,
        "swa_full": run.swa_full,
        "chunk": run.chunk,
        "stopped": run.stopped or "",
    }


def summaries(runs: Sequence[Run], n_ctx: int) -> list[dict[str, object]]:
    common = common_end(runs)
    return [summary(r, n_ctx, common) for r in runs]


def runs_from_csv(path: Path, n_ctx: int) -> list[Run]:
    """Runs read back from ``ppl_series.csv`` (to re-plot or re-summarise without evaluating again)."""
    from sinkchat.bench.report import read_csv

    runs: dict[str, Run] = {}
    for row in read_csv(path):
        label = row["policy"]
        run = runs.get(label)
        if run is None:
            policy = label.split("=")[0]
            run = runs[label] = Run(policy=policy, label=label, sinks=int(row["sinks"]), n_ctx=n_ctx)
        run.positions.append(int(row["tokens"]))
        run.nll.append(float(row["nll"]))
        run.counts.append(int(row["scored"]))
        run.rss.append(round(float(row["rss_mib"]) * 2**20))
        run.cached.append(int(row["cached"]))
        if row.get("seconds"):
            run.chunk_seconds.append(float(row["seconds"]))
    return list(runs.values())


def series_rows(runs: Sequence[Run]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for run in runs:
        seconds = run.chunk_seconds or [None] * len(run.positions)
        for pos, nll, count, rss, cached, secs in zip(
            run.positions, run.nll, run.counts, run.rss, run.cached, seconds, strict=True
        ):
            rows.append(
                {
                    "policy": run.label,
                    "sinks": run.sinks,
                    "tokens": pos,
                    "nll": nll,
                    "scored": count,
                    "rss_mib": rss / 2**20,
                    "cached": cached,
                    "seconds": secs,
                }
            )
    return rows


def smooth(run: Run, window_tokens: int) -> tuple[list[int], list[float]]:
    """Log-perplexity over the last ``window_tokens`` at each chunk end (what the plot shows)."""
    xs, ys = [], []
    pos = np.asarray(run.positions)
    weighted = np.cumsum(np.asarray(run.nll) * np.asarray(run.counts))
    counts = np.cumsum(run.counts)
    for i, p in enumerate(pos):
        j = int(np.searchsorted(pos, p - window_tokens, side="right")) - 1
        total = weighted[i] - (weighted[j] if j >= 0 else 0.0)
        n = counts[i] - (counts[j] if j >= 0 else 0)
        if n:
            xs.append(int(p))
            ys.append(float(total / n))
    return xs, ys


def write_results(runs: Sequence[Run], out: Path, config: PplConfig) -> dict[str, Path]:
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    files = {
        "series": write_csv(out / "ppl_series.csv", series_rows(runs)),
        "summary": write_csv(out / "ppl_summary.csv", summaries(runs, config.n_ctx)),
    }
    files.update(plots.ppl_plots(runs, out, config))
    return files
