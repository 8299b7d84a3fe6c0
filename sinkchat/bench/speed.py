"""``sinkchat bench speed``: sinkchat's decode loop and context shift, measured as ratios in one run.

1. Decode tokens/s of sinkchat's loop (:meth:`sinkchat.Chat.generate`) against
   llama-cpp-python's ``Llama.create_completion`` on the same model, threads and
   ``n_ctx``, interleaved A/B, greedy, the same prompt.
2. For several ``n_ctx``: one decode step, a context shift plus that step (``seq_rm`` +
   ``seq_add``; llama.cpp re-rotates the keys in the step), and re-prefilling the same kept
   window plus that step (what a front end without shifting must do).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from models.sampler import SamplingSettings
from sinkchat.bench.report import Progress, spread
from sinkchat.chat import Chat
from sinkchat.engine import SinkEngine
from sinkchat.layout import Eviction
from sinkchat.policy import SinkPolicy

PROMPT = "Once upon a time, in a kingdom by the northern sea, there lived an old clockmaker who"


class SpeedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ctx: tuple[int, ...] = (512, 1024, 2048, 4096)
    decode_tokens: int = Field(256, ge=8)
    decode_ctx: int = Field(2048, ge=64)
    repeats: int = Field(5, ge=1)
    sinks: int = Field(4, ge=0)
    threads: int = Field(default_factory=default_threads)


DECODE_COLUMNS = (
    ("n_ctx", "n_ctx"),
    ("tokens", "tokens"),
    ("sinkchat_min", "sinkchat tok/s min"),
    ("sinkchat_tok_s", "median"),
    ("sinkchat_max", "max"),
    ("create_completion_min", "create_completion min"),
    ("create_completion_tok_s", "median"),
    ("create_completion_max", "max"),
    ("ratio_min", "ratio min"),
    ("ratio", "median"),
    ("ratio_max", "max"),
)
"""``(summary key, heading)`` of the terminal table."""


SHIFT_COLUMNS = (
    ("n_ctx", "n_ctx"),
    ("kept", "kept"),
    ("step_ms", "step ms"),
    ("shift_step_ms_min", "shift+step min"),
    ("shift_step_ms", "median"),
    ("shift_step_ms_max", "max"),
    ("reprefill_step_ms_min", "re-prefill+step min"),
    ("reprefill_step_ms", "median"),
    ("reprefill_step_ms_max", "max"),
    ("ratio_min", "ratio min"),
    ("reprefill_over_shift", "median"),
    ("ratio_max", "max"),
)
"""``(summary key, heading)`` of the terminal table."""


def filler(model: LlamaModel, n: int) -> list[int]:
    text = " ".join(f"Paragraph {i}: the clockmaker repaired the town's clocks and told stories." for i in range(n))
    return model.tokenize(text)[:n]


def shift_costs(model: LlamaModel, n_ctx: int, config: SpeedConfig) -> dict[str, float]:
    """Median ms of: a decode step; a shift of a quarter of the window + the step; re-prefill + the step."""
    sinks, discard = config.sinks, n_ctx // 4
    tokens = filler(model, n_ctx + config.repeats * 3)
    plain, shift, reprefill = [], [], []
    with LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads)) as ctx:
        for r in range(config.repeats):
            ctx.clear()
            engine = SinkEngine(ctx, SinkPolicy(discard=discard), capacity=n_ctx, pin_target=sinks)
            engine.feed(tokens[: n_ctx - 2], "raw", 1)
            nxt = n_ctx - 2 + r

            t = time.perf_counter()
            engine.feed([tokens[nxt]], "raw", 1)
            plain.append(time.perf_counter() - t)

            t = time.perf_counter()
            engine.evict(Eviction(start=sinks, end=sinks + discard, aligned=False))
            engine.feed([tokens[nxt + 1]], "raw", 1)
            shift.append(time.perf_counter() - t)

            kept = list(engine.tokens)
            t = time.perf_counter()
            ctx.clear()
            ctx.decode(kept, 0, "none")
            ctx.decode([tokens[nxt + 2]], len(kept))
            reprefill.append(time.perf_counter() - t)
    step, shifted, again = (statistics.median(x) * 1e3 for x in (plain, shift, reprefill))
    ratios = [b / a for a, b in zip(shift, reprefill, strict=True)]
    low, _, high = spread(ratios)
    return {
        "n_ctx": n_ctx,
        "kept": n_ctx - discard,
        "step_ms": step,
        "step_ms_min": min(plain) * 1e3,
        "step_ms_max": max(plain) * 1e3,
        "shift_step_ms": shifted,
        "shift_step_ms_min": min(shift) * 1e3,
        "shift_step_ms_max": max(shift) * 1e3,
        "reprefill_step_ms": again,
        "reprefill_step_ms_min": min(reprefill) * 1e3,
        "reprefill_step_ms_max": max(reprefill) * 1e3,
        "reprefill_over_shift": again / shifted,
        "ratio_min": low,
        "ratio_max": high,
    }


def decode_speed(model: LlamaModel, config: SpeedConfig) -> dict[str, float]:
    """Median tokens/s of sinkchat's loop and of ``create_completion``, interleaved."""
    from llama_cpp import Llama

    n, n_ctx = config.decode_tokens, config.decode_ctx
    greedy = {"temperature": 0.0, "repeat_penalty": 1.0}
    ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads))
    chat = Chat(model, ctx, owns_model=False, sampling=SamplingSettings(**greedy))
    llm = Llama(str(model.path), n_ctx=n_ctx, n_threads=config.threads, n_threads_batch=config.threads, verbose=False)
    ours, theirs = [], []
    try:
        for _ in range(config.repeats):
            chat.reset()
            t = time.perf_counter()
            produced = sum(1 for _ in chat.generate(PROMPT, max_tokens=n, stop_at_eos=False))
            ours.append((chat.last_reply.n_tokens if chat.last_reply else produced) / (time.perf_counter() - t))

            llm.reset()
            t = time.perf_counter()
            out = llm.create_completion(PROMPT, max_tokens=n, logit_bias={llm.token_eos(): -1e9}, **greedy)
            theirs.append(out["usage"]["completion_tokens"] / (time.perf_counter() - t))
    finally:
        chat.close()
        llm.close()
    a, b = statistics.median(ours), statistics.median(theirs)
    ratios = [x / y for x, y in zip(ours, theirs, strict=True)]  # each pair ran back to back
    return {
        "n_ctx": n_ctx,
        "tokens": n,
        "sinkchat_tok_s": a,
        "sinkchat_min": min(ours),
        "sinkchat_max": max(ours),
        "create_completion_tok_s": b,
        "create_completion_min": min(theirs),
        "create_completion_max": max(theirs),
        "ratio": a / b,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def run_speed(
    model: LlamaModel, config: SpeedConfig, *, progress: bool = True
) -> tuple[dict[str, float], list[dict[str, float]]]:
    with Progress(1 + len(config.n_ctx), "speed", enabled=progress, unit="part") as bar:
        decode = decode_speed(model, config)
        bar.update(1)
        shifts = []
        for n_ctx in config.n_ctx:
            shifts.append(shift_costs(model, n_ctx, config))
            bar.update(1)
    return decode, shifts


def write_results(decode: dict[str, float], shifts: Sequence[dict[str, float]], out: Path) -> dict[str, Path | None]:
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    files: dict[str, Path | None] = {
        "decode": write_csv(out / "speed_decode.csv", [decode]),
        "shift": write_csv(out / "speed_shift.csv", list(shifts)),
    }
    xs = [s["n_ctx"] for s in shifts]
    files["plot"] = plots.lines(
        out / "speed.png",
        {
            "decode step": (xs, [s["step_ms"] for s in shifts]),
            "sinks (shift + step)": (xs, [s["shift_step_ms"] for s in shifts]),
            "recompute (re-prefill + step)": (xs, [s["reprefill_step_ms"] for s in shifts]),
        },
        title="Freeing a quarter of the cache: context shift vs re-prefilling the kept window",
        xlabel="n_ctx (tokens)",
        ylabel="milliseconds (median)",
        logy=True,
    )
    return files
