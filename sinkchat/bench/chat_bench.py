"""``sinkchat bench chat``: one long conversation (many two-turn prompts) under each cache policy.

The attention-sinks streaming-chat demo on a GGUF model: every prompt is sent in turn in
one conversation, greedy, and each reply is judged with the seeds' heuristic
(:func:`.fluency.is_failure`).  Policies:

- ``sinks``: sinkchat (sink tokens and the system prompt pinned, whole oldest exchanges evicted).
- ``window``: nothing pinned, cut at any token (window attention).
- ``half-discard``: llama.cpp's rule: keep the pinned prefix, drop half of the rest at any token.
- ``truncate``: what ordinary chat apps do: drop the oldest messages until the rendered
  history fits, reuse the common prefix of the cache, evaluate the rest again.
- ``dense``: never evicts; once the history no longer fits, every later turn fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from models.sampler import Sampler, SamplingSettings
from sinkchat.bench import fluency
from sinkchat.bench.report import Progress, percentile
from sinkchat.bench.streams import dense_size
from sinkchat.chat import Chat
from sinkchat.config import SinkSettings
from sinkchat.engine import SinkEngine
from sinkchat.errors import SinkchatError
from sinkchat.policy import SinkPolicy
from sinkchat.stats import process_rss
from sinkchat.text_stream import Utf8Joiner
from sinkchat.turns import Message

ChatPolicy = Literal["dense", "window", "sinks", "half-discard", "truncate"]
CHAT_POLICIES: tuple[ChatPolicy, ...] = ("dense", "window", "sinks", "half-discard", "truncate")
SYSTEM = "You are a helpful, friendly assistant. Answer clearly and concisely."


def load_prompts(path: Path | None = None) -> list[list[str]]:
    """The shipped two-turn prompts (84 conversations), or a JSON file of the same shape."""
    if path is None:
        raw = resources.files("sinkchat.bench").joinpath("data/chat_prompts.json").read_text(encoding="utf-8")
    else:
        raw = Path(path).expanduser().read_text(encoding="utf-8")
    data = json.loads(raw)
    return [list(c["turns"]) for c in data["conversations"]]


class ChatBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[ChatPolicy, ...] = CHAT_POLICIES
    n_ctx: int = Field(1024, ge=64)
    sinks: int = Field(4, ge=0)
    max_tokens: int = Field(160, ge=1, description="reply limit per turn")
    conversations: int | None = Field(None, ge=1, description="use only the first N prompt pairs")
    dense_ctx: int | None = Field(None, ge=64)
    system_prompt: str = SYSTEM
    sampling: SamplingSettings = SamplingSettings(temperature=0.0, repeat_penalty=1.1)
    threads: int = Field(default_factory=default_threads)


class Turn(BaseModel):
    policy: str
    turn: int
    prompt: str
    reply: str
    n_tokens: int
    seconds: float
    cached: int
    rss: int
    outcome: Literal["ok", "failed", "repeated", "context full"]
    fallbacks: int = 0
    """Re-reads so far instead of shifts (a cache that cannot shift)."""


class ContextFull(Exception):
    pass


class TemplateChat:
    """An ordinary chat front end: render the whole history every turn and evaluate what changed.

    With ``drop_oldest`` the oldest exchanges are dropped until the prompt and a full
    reply fit (``truncate``); without, a history that no longer fits ends the chat (``dense``).
    """

    def __init__(
        self,
        model: LlamaModel,
        ctx: LlamaContext,
        n_ctx: int,
        system: str,
        sampling: SamplingSettings,
        *,
        drop_oldest: bool,
        reserve: int,
    ) -> None:
        self.model, self.ctx, self.n_ctx = model, ctx, n_ctx
        template = model.chat_template()
        if template is None:
            raise SinkchatError(f"{model.name} has no chat template (a base model): the chat bench needs one")
        self.template = template
        self.system, self.sampling = system, sampling
        self.drop_oldest, self.reserve = drop_oldest, reserve
        self.history: list[Message] = []
        self.engine = SinkEngine(ctx, SinkPolicy(), capacity=n_ctx, pin_target=0)
        ctx.clear()

    @property
    def n_cached(self) -> int:
        return self.engine.n_cached

    def _prompt(self, messages: Sequence[Message]) -> list[int]:
        text = self.template.render([{"role": "system", "content": self.system}, *messages], True)
        add_bos = self.model.add_bos and not text.startswith(self.model.token_text(self.model.bos))
        return self.model.tokenize(text, add_special=add_bos)

    def load(self, tokens: Sequence[int]) -> None:
        """Make the cache hold ``tokens`` (last logits kept), as llama-cpp-python's prompt cache does:
        keep the longest common prefix, read the rest."""
        common = min(common_prefix(self.engine.tokens, tokens), len(tokens) - 1)
        self.engine.truncate(common)
        rest = tokens[common:]
        step = self.engine.chunk_size()
        for at in range(0, len(rest), step):
            self.engine.feed(rest[at : at + step], "raw", 1, logits=at + step >= len(rest))

    def send(self, text: str, max_tokens: int) -> Iterator[str]:
        messages = [*self.history, {"role": "user", "content": text}]
        tokens = self._prompt(messages)
        while len(tokens) + self.reserve > self.n_ctx and self.drop_oldest and len(messages) > 1:
            messages = messages[2:]
            tokens = self._prompt(messages)
        if len(tokens) >= self.n_ctx:
            raise ContextFull(f"the history ({len(tokens):,} tokens) no longer fits n_ctx {self.n_ctx:,}")
        self.load(tokens)
        pieces: list[str] = []
        joiner = Utf8Joiner()
        with Sampler(self.sampling, self.model.n_vocab) as sampler:
            for _ in range(max_tokens):
                if self.engine.n_cached >= self.n_ctx:
                    break
                token = sampler.sample(self.ctx)
                if self.model.is_eog(token):
                    break
                self.engine.feed([token], "raw", 1)
                piece = joiner.push(self.model.token_to_piece(token))
                pieces.append(piece)
                yield piece
        tail = joiner.flush()
        if tail:
            pieces.append(tail)
            yield tail
        self.history = [*messages, {"role": "assistant", "content": "".join(pieces)}]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def cache_size(model: LlamaModel, policy: ChatPolicy, config: ChatBenchConfig) -> int:
    return dense_size(model, config.dense_ctx, config.n_ctx) if policy == "dense" else config.n_ctx


def _open(model: LlamaModel, policy: ChatPolicy, config: ChatBenchConfig) -> tuple[object, int]:
    """A chat object for ``policy`` and its cache size."""
    n_ctx = cache_size(model, policy, config)
    ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads))
    if policy in ("dense", "truncate"):
        reserve = 0 if policy == "dense" else config.max_tokens
        return TemplateChat(
            model, ctx, n_ctx, config.system_prompt, config.sampling, drop_oldest=policy == "truncate", reserve=reserve
        ), n_ctx
    if policy == "sinks":
        sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=True)
    elif policy == "window":
        sinks = SinkSettings(sink_tokens=0, keep_system_prompt=False, pin_bos=False, aligned=False)
    else:  # half-discard: llama.cpp's n_keep + n_discard = n_left / 2
        sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=True, aligned=False)
    chat = Chat(model, ctx, sinks=sinks, system_prompt=config.system_prompt, sampling=config.sampling, owns_model=False)
    if policy == "half-discard":
        chat.sinks = sinks.model_copy(update={"discard": max(1, chat.engine.layout.window // 2)})
        chat.reset(config.system_prompt)
    return chat, n_ctx


REPEAT_KEY = 80
"""Replies that start with the same this many characters count as the same reply."""


def classify(reply: str, earlier: set[str]) -> Literal["ok", "failed", "repeated"]:
    """The seeds' heuristic first; then a reply that repeats an earlier one to another question.

    Small models copy their own earlier answers once the history is long (seen under every
    policy that keeps much of it); the character heuristics cannot see that.
    """
    if fluency.is_failure(reply):
        return "failed"
    key = reply.strip()[:REPEAT_KEY]
    if key and key in earlier:
        return "repeated"
    earlier.add(key)
    return "ok"


def run_policy(
    model: LlamaModel,
    prompts: Sequence[Sequence[str]],
    policy: ChatPolicy,
    config: ChatBenchConfig,
    *,
    progress: bool = True,
) -> list[Turn]:
    chat, n_ctx = _open(model, policy, config)
    turns: list[Turn] = []
    flat = [text for pair in prompts for text in pair]
    full = False
    earlier: set[str] = set()
    try:
        with Progress(len(flat), policy, enabled=progress, unit="turn") as bar:
            for i, text in enumerate(flat, start=1):
                started = time.perf_counter()
                reply, outcome = "", "ok"
                if full:
                    outcome = "context full"
                else:
                    try:
                        pieces = list(chat.send(text, max_tokens=config.max_tokens))  # type: ignore[attr-defined]
                        reply = "".join(pieces)
                        outcome = classify(reply, earlier)
                    except ContextFull:
                        full, outcome = True, "context full"
                cached = chat.n_cached if isinstance(chat, TemplateChat) else chat.stats.n_cached  # type: ignore[attr-defined]
                engine = chat.engine  # type: ignore[attr-defined]
                n_tokens = len(model.tokenize(reply, parse_special=False)) if reply else 0
                turns.append(
                    Turn(
                        policy=policy,
                        turn=i,
                        prompt=text,
                        reply=reply,
                        n_tokens=n_tokens,
                        seconds=time.perf_counter() - started,
                        cached=cached,
                        rss=process_rss(),
                        outcome=outcome,
                        fallbacks=engine.fallbacks,
                    )
                )
                bar.update(1, failed=sum(t.outcome != "ok" for t in turns))
    finally:
        if isinstance(chat, TemplateChat):
            chat.ctx.close()
        else:
            chat.close()  # type: ignore[attr-defined]
    return turns


def run_chat(
    model: LlamaModel, config: ChatBenchConfig, prompts: Sequence[Sequence[str]] | None = None, *, progress: bool = True
) -> dict[str, list[Turn]]:
    prompts = list(prompts if prompts is not None else load_prompts())[: config.conversations]
    return {policy: run_policy(model, prompts, policy, config, progress=progress) for policy in config.policies}


COLUMNS = (
    ("policy", "policy"),
    ("n_ctx", "n_ctx"),
    ("turns", "turns"),
    ("failed", "failed"),
    ("repeated", "repeated"),
    ("context_full", "context full"),
    ("empty", "empty"),
    ("median_s", "median s/turn"),
    ("p90_s", "p90 s"),
    ("max_cached", "max cached"),
    ("fallbacks", "re-reads"),
    ("rss_growth_mib", "RSS growth MiB"),
)
"""``(summary key, heading)`` of the terminal table."""


def summary(policy: str, turns: Sequence[Turn], n_ctx: int) -> dict[str, object]:
    answered = [t for t in turns if t.outcome != "context full"]
    secs = [t.seconds for t in answered]
    return {
        "policy": policy,
        "n_ctx": n_ctx,
        "turns": len(turns),
        "failed": sum(t.outcome == "failed" for t in turns),
        "repeated": sum(t.outcome == "repeated" for t in turns),
        "context_full": sum(t.outcome == "context full" for t in turns),
        "empty": sum(t.outcome == "ok" and not t.reply.strip() for t in turns),
        "median_s": percentile(secs, 50),
        "p90_s": percentile(secs, 90),
        "max_cached": max((t.cached for t in turns), default=0),
        "fallbacks": turns[-1].fallbacks if turns else 0,
        "rss_growth_mib": (turns[-1].rss - turns[0].rss) / 2**20 if turns else None,
    }


def turns_from_csv(path: Path) -> dict[str, list[Turn]]:
    """Turns read back from ``chat_turns.csv``, classified again (to re-summarise without a model)."""
    from sinkchat.bench.report import read_csv

    results: dict[str, list[Turn]] = {}
    earlier: dict[str, set[str]] = {}
    for row in read_csv(path):
        policy = row["policy"]
        outcome = row["outcome"]
        if outcome != "context full":
            outcome = classify(row["reply"], earlier.setdefault(policy, set()))
        results.setdefault(policy, []).append(
            Turn(
                policy=policy,
                turn=int(row["turn"]),
                prompt=row["prompt"],
                reply=row["reply"],
                n_tokens=int(row["n_tokens"]),
                seconds=float(row["seconds"]),
                cached=int(row["cached"]),
                rss=round(float(row["rss_mib"]) * 2**20),
                outcome=outcome,
            )  # type: ignore[arg-type]
        )
    return results


def write_results(
    results: dict[str, list[Turn]], out: Path, config: ChatBenchConfig, n_ctx: dict[str, int]
) -> dict[str, Path | None]:
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    rows = [t.model_dump() | {"rss_mib": t.rss / 2**20} for turns in results.values() for t in turns]
    for row in rows:
        del row["rss"]
    files: dict[str, Path | None] = {
        "turns": write_csv(out / "chat_turns.csv", rows),
        "summary": write_csv(out / "chat_summary.csv", [summary(p, t, n_ctx[p]) for p, t in results.items()]),
    }

    def series(key: str) -> dict[str, tuple[list[float], list[float]]]:
        out_: dict[str, tuple[list[float], list[float]]] = {}
        for policy, turns in results.items():
            if key == "failures":
                total, ys = 0, []
                for t in turns:
                    total += t.outcome != "ok"
                    ys.append(total)
            elif key == "rss":
                ys = [t.rss / 2**20 for t in turns]
            else:
                ys = [getattr(t, key) for t in turns]
            out_[policy] = ([t.turn for t in turns], ys)
        return out_

    files["plot"] = plots.panels(
        out / "chat.png",
        [
            ("failed or repeated turns (cumulative)", series("failures"), False),
            ("seconds per turn", series("seconds"), False),
            ("tokens in cache", series("cached"), False),
            ("process RSS (MiB)", series("rss"), False),
        ],
        title=f"{sum(len(t) for t in results.values()) // max(1, len(results))} turns in one conversation · cache {config.n_ctx} tokens",
        xlabel="turn",
    )
    return files
