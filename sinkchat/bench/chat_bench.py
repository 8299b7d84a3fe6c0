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
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.chat_template import ChatTemplate
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from models.sampler import Sampler, SamplingSettings
from models.templates import resolve as resolve_template
from sinkchat.bench import fluency
from sinkchat.bench.report import Progress, percentile, rss_growth, spread
from sinkchat.bench.streams import dense_size
from sinkchat.chat import Chat
from sinkchat.config import SinkSettings
from sinkchat.engine import SinkEngine
from sinkchat.errors import SinkchatError
from sinkchat.policy import SinkPolicy
from sinkchat.stats import process_rss
from sinkchat.text_stream import Utf8Joiner
from sinkchat.turns import Message

if TYPE_CHECKING:
    from sinkchat.bench.paired import ReplyScore

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
    chat_template: str | None = Field(None, description="a template name or file, for a model without one")
    transcript: ChatPolicy | None = Field(
        "truncate", description="whose replies the paired replay reads (None: no paired replay)"
    )
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
    why: str = ""
    """Why the heuristic failed the reply (:func:`.fluency.failure_reason`): a loop, or only few characters."""


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
        template: ChatTemplate | None = None,
        fresh: bool = False,
    ) -> None:
        self.model, self.ctx, self.n_ctx = model, ctx, n_ctx
        template = template or model.chat_template()
        if template is None:
            raise SinkchatError(
                f"{model.name} has no chat template (a base model): give one with --chat-template NAME|FILE"
            )
        self.template = template
        self.system, self.sampling = system, sampling
        self.drop_oldest, self.reserve = drop_oldest, reserve
        self.fresh = fresh
        """Read every prompt from an empty cache (the oracle of the paired bench), not from the common prefix."""
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

    def fit(self, messages: Sequence[Message], reserve: int) -> tuple[list[Message], list[int]]:
        """The messages that fit with ``reserve`` tokens left for a reply (the oldest exchanges dropped,
        with ``drop_oldest``), rendered for the next reply; :class:`ContextFull` when they cannot fit."""
        messages = list(messages)
        tokens = self._prompt(messages)
        while len(tokens) + reserve > self.n_ctx and self.drop_oldest and len(messages) > 1:
            messages = messages[2:]
            tokens = self._prompt(messages)
        if len(tokens) >= self.n_ctx:
            raise ContextFull(f"the history ({len(tokens):,} tokens) no longer fits n_ctx {self.n_ctx:,}")
        return messages, tokens

    def load(self, tokens: Sequence[int]) -> None:
        """Make the cache hold ``tokens`` (last logits kept), as llama-cpp-python's prompt cache does:
        keep the longest common prefix, read the rest (everything, when ``fresh``)."""
        common = 0 if self.fresh else min(common_prefix(self.engine.tokens, tokens), len(tokens) - 1)
        self.engine.truncate(common)
        rest = tokens[common:]
        step = self.engine.chunk_size()
        for at in range(0, len(rest), step):
            self.engine.feed(rest[at : at + step], "raw", 1, logits=at + step >= len(rest))

    def send(self, text: str, max_tokens: int) -> Iterator[str]:
        messages, tokens = self.fit([*self.history, {"role": "user", "content": text}], self.reserve)
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

    def read_exchange(self, user: str, reply: str) -> tuple[list[int], Any]:
        """Add a finished exchange, the reply teacher-forced (as :meth:`sinkchat.chat.Chat.read_exchange`):
        the reply's tokens and the logits that predicted each."""
        import numpy as np

        targets = self.model.tokenize(reply, add_special=False, parse_special=False)
        messages, tokens = self.fit([*self.history, {"role": "user", "content": user}], max(self.reserve, len(targets)))
        if len(tokens) + len(targets) > self.n_ctx:
            raise ContextFull(f"the history ({len(tokens):,} tokens) and the reply no longer fit n_ctx {self.n_ctx:,}")
        self.load(tokens)
        rows = [self.ctx.logits(-1)[None]]
        if targets:
            rows.append(self.engine.feed_logits(targets, "raw", 1))
        self.history = [*messages, {"role": "assistant", "content": reply}]
        return targets, np.concatenate(rows)[: len(targets)]

    def score(self, question: str, candidates: Sequence[str]) -> list[float]:
        """Teacher-forced log-probability of each candidate answer to ``question``, asked after the
        history that fits (the recall probes); the question is removed again, the history it followed
        stays cached, as a front end's prompt cache would keep it."""
        messages, tokens = self.fit([*self.history, {"role": "user", "content": question}], self.reserve)
        targets = [self.model.tokenize(c, parse_special=False) or [self.model.eos] for c in candidates]
        if len(tokens) + max(len(t) for t in targets) >= self.n_ctx:
            raise ContextFull(f"the history ({len(tokens):,} tokens) no longer fits n_ctx {self.n_ctx:,}")
        self.load(tokens)
        scores = self.engine.score_continuations(self.ctx.logits(-1), targets, "raw", 1)
        self.engine.truncate(common_prefix(tokens, self._prompt([*messages[:-1], {"role": "user", "content": ""}])))
        return scores


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def template_for(model: LlamaModel, spec: str | None) -> ChatTemplate | None:
    """``--chat-template`` (a name or a file) for ``model``, or None for the model's own."""
    if spec is None:
        return None
    name, source = resolve_template(spec)
    return model.chat_template(source=source, name=name)


def cache_size(model: LlamaModel, policy: ChatPolicy, config: ChatBenchConfig) -> int:
    return dense_size(model, config.dense_ctx, config.n_ctx) if policy == "dense" else config.n_ctx


def _open(model: LlamaModel, policy: ChatPolicy, config: ChatBenchConfig) -> tuple[object, int]:
    """A chat object for ``policy`` and its cache size."""
    n_ctx = cache_size(model, policy, config)
    ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads))
    template = template_for(model, config.chat_template)
    if policy in ("dense", "truncate"):
        reserve = 0 if policy == "dense" else config.max_tokens
        return TemplateChat(model, ctx, n_ctx, config.system_prompt, config.sampling,
                            drop_oldest=policy == "truncate", reserve=reserve, template=template), n_ctx  # fmt: skip
    if policy == "sinks":
        sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=True)
    elif policy == "window":
        sinks = SinkSettings(sink_tokens=0, keep_system_prompt=False, pin_bos=False, aligned=False)
    else:  # half-discard: llama.cpp's n_keep + n_discard = n_left / 2
        sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=True, aligned=False)
    chat = Chat(model, ctx, sinks=sinks, system_prompt=config.system_prompt, sampling=config.sampling,
                owns_model=False, template=template)  # fmt: skip
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


class Conversation:
    """One policy's side of the chat bench: its cache, its replies so far, one turn at a time."""

    def __init__(self, model: LlamaModel, policy: ChatPolicy, config: ChatBenchConfig) -> None:
        self.model, self.policy = model, policy
        self.chat, self.n_ctx = _open(model, policy, config)
        self.config = config
        self.turns: list[Turn] = []
        self.full = False
        self.earlier: set[str] = set()

    def step(self, number: int, text: str) -> Turn:
        """Send ``text`` and judge the reply (``context full`` from the first turn that did not fit)."""
        started = time.perf_counter()
        reply, outcome = "", "ok"
        if self.full:
            outcome = "context full"
        else:
            try:
                reply = "".join(self.chat.send(text, max_tokens=self.config.max_tokens))  # type: ignore[attr-defined]
                outcome = classify(reply, self.earlier)
            except ContextFull:
                self.full, outcome = True, "context full"
        seconds = time.perf_counter() - started
        chat = self.chat
        cached = chat.n_cached if isinstance(chat, TemplateChat) else chat.stats.n_cached  # type: ignore[attr-defined]
        turn = Turn(
            policy=self.policy,
            turn=number,
            prompt=text,
            reply=reply,
            n_tokens=len(self.model.tokenize(reply, parse_special=False)) if reply else 0,
            seconds=seconds,
            cached=cached,
            rss=process_rss(),
            outcome=outcome,  # type: ignore[arg-type]
            fallbacks=chat.engine.fallbacks,  # type: ignore[attr-defined]
            why=(fluency.failure_reason(reply) or "") if outcome == "failed" else "",
        )
        self.turns.append(turn)
        return turn

    def close(self) -> None:
        if isinstance(self.chat, TemplateChat):
            self.chat.ctx.close()
        else:
            self.chat.close()  # type: ignore[attr-defined]


def run_chat(
    model: LlamaModel, config: ChatBenchConfig, prompts: Sequence[Sequence[str]] | None = None, *, progress: bool = True
) -> dict[str, list[Turn]]:
    """Every policy holds the same conversation, in lockstep: each turn is sent to every policy in a
    rotating order, so a change in the machine's load lands on all of them alike."""
    prompts = list(prompts if prompts is not None else load_prompts())[: config.conversations]
    flat = [text for pair in prompts for text in pair]
    conversations: list[Conversation] = []
    try:
        for policy in config.policies:
            conversations.append(Conversation(model, policy, config))
        with Progress(len(flat), "chat", enabled=progress, unit="turn") as bar:
            for number, text in enumerate(flat, start=1):
                shift = number % len(conversations)
                for conversation in conversations[shift:] + conversations[:shift]:
                    conversation.step(number, text)
                bar.update(1, failed=sum(t.outcome != "ok" for c in conversations for t in c.turns))
    finally:
        for conversation in conversations:
            conversation.close()
    return {c.policy: c.turns for c in conversations}


def transcript_of(results: dict[str, list[Turn]], policy: str) -> list[tuple[str, str]]:
    """The fixed transcript of the paired replay: ``policy``'s exchanges up to its first unanswered turn."""
    turns = []
    for t in results[policy]:
        if t.outcome == "context full":
            break
        turns.append((t.prompt, t.reply))
    return turns


def run_paired(
    model: LlamaModel, config: ChatBenchConfig, turns: Sequence[tuple[str, str]], *, progress: bool = True
) -> list[ReplyScore]:
    """Every policy reads the same fixed transcript; each reply scored against the oracle (:mod:`.paired`)."""
    from sinkchat.bench.paired import ChatReader, TemplateReader, open_oracle, replay

    readers = []
    template = template_for(model, config.chat_template)
    oracle = open_oracle(model, config.n_ctx, config.system_prompt, config.max_tokens, template, config.threads)
    try:
        for policy in config.policies:
            chat, _ = _open(model, policy, config)
            readers.append(TemplateReader(policy, chat) if isinstance(chat, TemplateChat) else ChatReader(policy, chat))  # type: ignore[arg-type]
        return replay(readers, oracle, turns, progress=progress)
    finally:
        for reader in [oracle, *readers]:
            reader.close()


COLUMNS = (
    ("policy", "policy"),
    ("n_ctx", "n_ctx"),
    ("turns", "turns"),
    ("failed", "failed"),
    ("failed_loops", "of which loops"),
    ("repeated", "repeated"),
    ("context_full", "context full"),
    ("empty", "empty"),
    ("kl_mean", "KL to oracle"),
    ("nll_delta", "NLL - oracle"),
    ("min_s", "s/turn min"),
    ("median_s", "median"),
    ("max_s", "max"),
    ("max_cached", "max cached"),
    ("fallbacks", "re-reads"),
    ("rss_growth_mib", "RSS growth MiB"),
)
"""``(summary key, heading)`` of the terminal table."""


def summary(policy: str, turns: Sequence[Turn], n_ctx: int, paired: Sequence[ReplyScore] = ()) -> dict[str, object]:
    """One policy's row: the heuristic's counts, the paired replay's KL and NLL (when it ran), the
    time per turn with its spread, memory."""
    from sinkchat.bench.paired import summary as paired_summary

    answered = [t for t in turns if t.outcome != "context full"]
    secs = [t.seconds for t in answered]
    fastest, median, slowest = spread(secs)
    quality = {r["policy"]: r for r in paired_summary(paired)}.get(policy, {})
    return {
        "policy": policy,
        "n_ctx": n_ctx,
        "turns": len(turns),
        "failed": sum(t.outcome == "failed" for t in turns),
        "failed_loops": sum(t.outcome == "failed" and "loop" in t.why for t in turns),
        "repeated": sum(t.outcome == "repeated" for t in turns),
        "context_full": sum(t.outcome == "context full" for t in turns),
        "empty": sum(t.outcome == "ok" and not t.reply.strip() for t in turns),
        "kl_mean": quality.get("kl_mean"),
        "nll_delta": quality.get("nll_delta"),
        "agree": quality.get("agree"),
        "min_s": fastest,
        "median_s": median,
        "p90_s": percentile(secs, 90),
        "max_s": slowest,
        "max_cached": max((t.cached for t in turns), default=0),
        "fallbacks": turns[-1].fallbacks if turns else 0,
        "rss_growth_mib": rss_growth([t.rss for t in turns]) / 2**20 if turns else None,
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
                why=(fluency.failure_reason(row["reply"]) or "") if outcome == "failed" else "",
            )  # type: ignore[arg-type]
        )
    return results


def write_results(
    results: dict[str, list[Turn]],
    out: Path,
    config: ChatBenchConfig,
    n_ctx: dict[str, int],
    paired: Sequence[ReplyScore] = (),
) -> dict[str, Path | None]:
    from sinkchat.bench import paired as paired_bench
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    rows = [t.model_dump() | {"rss_mib": t.rss / 2**20} for turns in results.values() for t in turns]
    for row in rows:
        del row["rss"]
    files: dict[str, Path | None] = {
        "turns": write_csv(out / "chat_turns.csv", rows),
        "summary": write_csv(out / "chat_summary.csv", [summary(p, t, n_ctx[p], paired) for p, t in results.items()]),
    }
    if paired:
        files["paired"] = write_csv(out / "chat_paired.csv", [r.model_dump() for r in paired])
        files["paired_summary"] = write_csv(out / "chat_paired_summary.csv", paired_bench.summary(paired))
        if plots.available():
            files["paired_plot"] = paired_bench.plot(
                paired, out / "chat_paired.png", title=f"{config.transcript}'s replies read by every policy"
            )

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
