"""``sinkchat bench endless``: generate far beyond the cache with each policy.

The attention-sinks endless-generation demo on a GGUF model: one prompt, N tokens (the
end-of-text token is fed back and generation goes on), the same sampler and seed for
every policy.  Records when fluency is lost (:mod:`.fluency`), per-token latency and
memory over time, and saves every text.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from models.sampler import Sampler, SamplingSettings
from sinkchat.bench import fluency
from sinkchat.bench.report import Progress, interleave, percentile, rss_growth, spread
from sinkchat.bench.streams import STREAM_POLICIES, CacheFull, StreamPolicy, dense_size, open_stream
from sinkchat.stats import process_rss
from sinkchat.text_stream import Utf8Joiner

PROMPT = (
    "Chapter One\n\nThe lighthouse keeper had not spoken to anyone for three winters when the boat "
    "appeared on the grey water. She watched it from the lamp room, and"
)
SAMPLE_EVERY = 32
"""Memory and cache size are sampled every this many tokens."""


class EndlessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[StreamPolicy, ...] = STREAM_POLICIES
    tokens: int = Field(10_000, ge=1)
    n_ctx: int = Field(256, ge=32)
    sinks: int = Field(4, ge=0)
    discard: int | None = Field(None, ge=1, description="tokens one shift frees (default: a quarter of n_ctx)")
    dense_ctx: int | None = Field(None, ge=32)
    prompt: str = PROMPT
    sampling: SamplingSettings = SamplingSettings(
        temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1, seed=7
    )
    threads: int = Field(default_factory=default_threads)


class Generation(BaseModel):
    policy: str
    n_ctx: int
    text: str = ""
    latencies_ms: list[float] = Field(default_factory=list)
    samples: list[tuple[int, int, int]] = Field(default_factory=list)
    """``(tokens generated, RSS bytes, tokens cached)`` every :data:`SAMPLE_EVERY` tokens."""
    char_ends: list[int] = Field(default_factory=list)
    """Length of the text after each token (maps a character offset back to a token)."""
    shifts: int = 0
    fallbacks: int = 0
    """Shifts done by reading the cache again (it could not shift)."""
    seconds: float = 0.0
    stopped: str | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.latencies_ms)

    def token_at(self, offset: int | None) -> int | None:
        """The token that completed character ``offset`` of the text."""
        return None if offset is None else bisect.bisect_left(self.char_ends, offset) + 1

    def loss_token(self) -> int | None:
        """Token at which fluency was first lost (the seeds' distinct-character heuristic), or None."""
        return self.token_at(fluency.first_loss(self.text))

    def loop_token(self) -> int | None:
        """Token at which the text first loops, or None."""
        return self.token_at(fluency.first_loop(self.text))


def generate(model: LlamaModel, policy: StreamPolicy, config: EndlessConfig, *, progress: bool = True) -> Generation:
    """One policy alone."""
    run = Generation(policy=policy, n_ctx=cache_size(model, policy, config))
    with Progress(config.tokens, policy, enabled=progress) as bar:
        for _ in generation_steps(model, run, config, bar):
            pass
    return run


def cache_size(model: LlamaModel, policy: StreamPolicy, config: EndlessConfig) -> int:
    return dense_size(model, config.dense_ctx, config.n_ctx) if policy == "dense" else config.n_ctx


def generation_steps(model: LlamaModel, run: Generation, config: EndlessConfig, bar: Progress) -> Iterator[None]:
    """Generate with ``run``'s policy, one token per step (so policies can be interleaved); each
    token's latency is the time inside its own step."""
    n_ctx = run.n_ctx
    prompt = model.tokenize(config.prompt, add_special=model.add_bos)
    pieces: list[str] = []
    length = 0
    with (
        LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads)) as ctx,
        Sampler(config.sampling, model.n_vocab) as sampler,
    ):
        stream = open_stream(run.policy, ctx, sinks=config.sinks, discard=config.discard, recompute_every_feed=False)  # type: ignore[arg-type]
        step = stream.max_chunk()
        for at in range(0, len(prompt), step):
            piece = prompt[at : at + step]
            stream.feed(piece, "last" if at + step >= len(prompt) else "none")
        joiner = Utf8Joiner()
        for i in range(config.tokens):
            t = time.perf_counter()
            token = sampler.sample(ctx)
            try:
                stream.feed([token], "last")
            except CacheFull:
                run.stopped = f"cache full after {i:,} tokens (n_ctx {n_ctx:,})"
                break
            elapsed = time.perf_counter() - t
            run.latencies_ms.append(elapsed * 1e3)
            run.seconds += elapsed
            text = joiner.push(model.token_to_piece(token))
            pieces.append(text)
            length += len(text)
            run.char_ends.append(length)
            if (i + 1) % SAMPLE_EVERY == 0:
                run.samples.append((i + 1, process_rss(), stream.n_cached))
            bar.update(1)
            yield
        pieces.append(joiner.flush())
        run.shifts = stream.shifts
        run.fallbacks = stream.fallbacks
    run.text = "".join(pieces)


def run_endless(model: LlamaModel, config: EndlessConfig, *, progress: bool = True) -> list[Generation]:
    """Every policy, interleaved token by token (:func:`.report.interleave`)."""
    runs = [Generation(policy=p, n_ctx=cache_size(model, p, config)) for p in config.policies]
    with Progress(config.tokens * len(runs), "endless", enabled=progress) as bar:
        interleave([generation_steps(model, run, config, bar) for run in runs])
    return runs


COLUMNS = (
    ("policy", "policy"),
    ("tokens", "tokens"),
    ("fluency_lost_at", "<26 chars at"),
    ("low_variety_pct", "<26 chars %"),
    ("looping_at", "loops from"),
    ("looping_pct", "looping %"),
    ("min_ms", "min ms"),
    ("median_ms", "median ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
    ("shifts", "shifts"),
    ("fallbacks", "re-reads"),
    ("rss_start_mib", "RSS MiB"),
    ("rss_growth_mib", "RSS growth"),
    ("stopped", ""),
)
"""``(summary key, heading)`` of the terminal table."""


def _share(values: Sequence[float], bad: Callable[[float], bool]) -> float | None:
    """Percent of the text's windows judged bad."""
    return 100 * sum(map(bad, values)) / len(values) if values else None


def summary(run: Generation) -> dict[str, object]:
    lat = run.latencies_ms
    fastest, median, slowest = spread(lat)
    loss = run.loss_token()
    rss = [s[1] for s in run.samples]
    return {
        "policy": run.policy,
        "n_ctx": run.n_ctx,
        "tokens": run.n_tokens,
        "fluency_lost_at": loss,
        "low_variety_pct": _share(fluency.distinct_profile(run.text), lambda d: d < fluency.MIN_DISTINCT),
        "looping_at": run.loop_token(),
        "looping_pct": _share(
            [r for _, r in fluency.compression_profile(run.text)], lambda r: r < fluency.MAX_COMPRESSION
        ),
        "min_ms": fastest,
        "median_ms": median,
        "p99_ms": percentile(lat, 99),
        "max_ms": slowest,
        "tok_per_s": run.n_tokens / run.seconds if run.seconds else None,
        "shifts": run.shifts,
        "fallbacks": run.fallbacks,
        "rss_start_mib": rss[0] / 2**20 if rss else None,
        "rss_growth_mib": rss_growth(rss) / 2**20 if rss else None,  # the process's: see report.rss_growth
        "stopped": run.stopped or "",
    }


def series_rows(runs: Sequence[Generation]) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for run in runs:
        profile = fluency.distinct_profile(run.text)
        ratios = fluency.compression_profile(run.text)
        ends = [end for end, _ in ratios]
        for n, rss, cached in run.samples:
            block = run.latencies_ms[max(0, n - SAMPLE_EVERY) : n]
            end = run.char_ends[n - 1] if n - 1 < len(run.char_ends) else len(run.text)
            k = end - fluency.WINDOW
            j = bisect.bisect_right(ends, end) - 1
            rows.append(
                {
                    "policy": run.policy,
                    "tokens": n,
                    "distinct_chars": profile[k] if 0 <= k < len(profile) else None,
                    "compression": ratios[j][1] if j >= 0 else None,
                    "median_ms": statistics.median(block) if block else None,
                    "max_ms": max(block) if block else None,
                    "rss_mib": rss / 2**20,
                    "cached": cached,
                }
            )
    return rows


def write_results(runs: Sequence[Generation], out: Path, config: EndlessConfig) -> dict[str, Path | None]:
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    series = series_rows(runs)
    files: dict[str, Path | None] = {
        "series": write_csv(out / "endless_series.csv", series),
        "summary": write_csv(out / "endless_summary.csv", [summary(r) for r in runs]),
    }
    for run in runs:
        files[f"text-{run.policy}"] = out / f"endless_{run.policy}.txt"
        (out / f"endless_{run.policy}.txt").write_text(config.prompt + run.text, encoding="utf-8")

    def pick(key: str) -> dict[str, tuple[list[float], list[float]]]:
        result: dict[str, tuple[list[float], list[float]]] = {}
        for run in runs:
            pts = [(r["tokens"], r[key]) for r in series if r["policy"] == run.policy and r[key] is not None]
            result[run.policy] = ([p[0] for p in pts], [p[1] for p in pts])  # type: ignore[misc]
        return result

    files["plot"] = plots.panels(
        out / "endless.png",
        [
            (f"distinct chars (last {fluency.WINDOW})", pick("distinct_chars"), False),
            ("zlib ratio (loops < 0.4)", pick("compression"), False),
            (f"median ms/token (per {SAMPLE_EVERY})", pick("median_ms"), True),
            ("process RSS (MiB)", pick("rss_mib"), False),
        ],
        title=f"Endless generation · cache {config.n_ctx} tokens · fluency lost below {fluency.MIN_DISTINCT} distinct chars",
        xlabel="tokens generated",
        thresholds=[(0, fluency.MIN_DISTINCT), (1, fluency.MAX_COMPRESSION)],
    )
    return files
