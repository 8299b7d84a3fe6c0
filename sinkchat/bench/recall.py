"""``sinkchat bench recall``: what a long chat can still recall, turn after turn, per cache policy.

Facts are planted in known places: in the system prompt, in the first user turn, and in a
recent user turn (a new one before every checkpoint).  One fixed transcript (generated once,
greedily, then replayed) runs through every policy's cache, so the policies are compared on
the same history.  At each checkpoint every fact is probed by teacher forcing: the question is
read as the next user message and the log-probability of the true answer is compared with
that of distractors of the same kind.  Nothing is generated, and the probe is undone
(:meth:`sinkchat.chat.Chat.score_replies`), so it never stays in the cache.

Policies, on the same engine:

- ``sinkchat``: sink tokens and the system prompt pinned, whole oldest exchanges evicted;
- ``sinks-unpinned``: the sinks only, the system prompt evicted like an old turn;
- ``half-discard``: llama.cpp's context shift: ``n_keep`` 4, half of the rest dropped at any token;
- ``truncate``: what ordinary chat apps do: drop the oldest messages until the rendered history
  fits, and read again what changed;
- ``dense``: the whole history, while it fits the model's training context (the ceiling).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from models.sampler import SamplingSettings
from sinkchat.bench.chat_bench import ContextFull, TemplateChat, common_prefix, load_prompts
from sinkchat.bench.report import Progress
from sinkchat.bench.streams import dense_size
from sinkchat.chat import Chat
from sinkchat.config import SinkSettings

RecallPolicy = Literal["sinkchat", "sinks-unpinned", "half-discard", "truncate", "dense"]
RECALL_POLICIES: tuple[RecallPolicy, ...] = ("sinkchat", "sinks-unpinned", "half-discard", "truncate", "dense")
FactKind = Literal["system", "early", "recent"]


@dataclass(frozen=True)
class Fact:
    kind: FactKind
    question: str
    answer: str
    distractors: tuple[str, ...]

    @property
    def candidates(self) -> list[str]:
        """The true answer first, then the distractors."""
        return [self.answer, *self.distractors]


FLOWERS = ("marigold", "lavender", "begonia", "camellia", "gardenia", "hyacinth", "magnolia", "primrose")
NAMES = ("Beatrice", "Cornelia", "Henrietta", "Josephine", "Leopoldine", "Philippa", "Rosalind", "Wilhelmina")
SYSTEM_FACT = Fact("system", "What is the password?", "heliotrope", FLOWERS)
EARLY_FACT = Fact("early", "What is my sister's name?", "Margarethe", NAMES)
RECENT_NUMBERS = (47, 213, 88, 531, 62, 904, 375, 129, 756, 318, 640, 291, 83, 467, 702, 155)


def system_prompt(answer: str = SYSTEM_FACT.answer) -> str:
    return f"You are a helpful assistant. The password is {answer}. Answer clearly and concisely."


def early_turn(answer: str = EARLY_FACT.answer) -> str:
    return f"Before we start, remember this: my sister's name is {answer}. Now, what is a good name for a cat?"


def recent_fact(checkpoint: int) -> tuple[str, Fact]:
    """A user turn planting a locker number, and its fact; a new number before every checkpoint."""
    number = RECENT_NUMBERS[checkpoint % len(RECENT_NUMBERS)]
    others = tuple(str(n) for n in RECENT_NUMBERS if n != number)[:8]
    turn = f"By the way, my locker number is {number}. Can you suggest a way to remember it?"
    return turn, Fact("recent", "What is my locker number?", str(number), others)


def rank_and_margin(scores: Sequence[float], true_index: int) -> tuple[int, float]:
    """The true answer's rank among all candidates (1 = best; a tie does not count as a win) and its
    log-probability margin over the best distractor."""
    true = scores[true_index]
    others = [s for i, s in enumerate(scores) if i != true_index]
    rank = 1 + sum(s >= true for s in others)
    return rank, true - max(others)


class RecallConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policies: tuple[RecallPolicy, ...] = RECALL_POLICIES
    n_ctx: int = Field(512, ge=128)
    turns: int = Field(160, ge=4)
    every: int = Field(8, ge=2, description="turns between checkpoints")
    recent_gap: int = Field(2, ge=1, description="turns between the recent fact and its probe")
    max_tokens: int = Field(64, ge=1, description="reply limit of the transcript")
    sinks: int = Field(4, ge=0)
    dense_ctx: int | None = Field(None, ge=128)
    threads: int = Field(default_factory=default_threads)


@dataclass
class Script:
    """The fixed conversation every policy replays: user turns, replies, and where each fact is probed."""

    system: str
    turns: list[tuple[str, str]]
    probes: dict[int, list[Fact]]
    """After turn N (1-based), the facts to probe."""


def plan(config: RecallConfig) -> tuple[list[str], dict[int, list[Fact]]]:
    """The user turns and the checkpoints, before any reply exists."""
    filler = [t for pair in load_prompts() for t in pair]
    users = [early_turn()]
    probes: dict[int, list[Fact]] = {}
    checkpoint = 0
    while len(users) < config.turns:
        n = len(users) + 1  # the number of the turn being planned
        if (n + config.recent_gap) % config.every == 0 and n + config.recent_gap <= config.turns:
            turn, fact = recent_fact(checkpoint)
            users.append(turn)
            probes[n + config.recent_gap] = [SYSTEM_FACT, EARLY_FACT, fact]
            checkpoint += 1
        else:
            users.append(filler[(n - 2) % len(filler)])
    return users, probes


def write_transcript(model: LlamaModel, config: RecallConfig, *, progress: bool = True) -> Script:
    """Generate the replies once (greedy, sinkchat's cache) so every policy replays the same chat."""
    users, probes = plan(config)
    ctx = LlamaContext(model, LoadOptions(n_ctx=config.n_ctx, n_threads=config.threads))
    sampling = SamplingSettings(temperature=0.0, repeat_penalty=1.1)
    chat = Chat(model, ctx, system_prompt=system_prompt(), sampling=sampling, owns_model=False)
    turns = []
    try:
        with Progress(len(users), "transcript", enabled=progress, unit="turn") as bar:
            for user in users:
                reply = "".join(chat.send(user, max_tokens=config.max_tokens))
                turns.append((user, reply))
                bar.update(1)
    finally:
        chat.close()
    return Script(system_prompt(), turns, probes)


class Replay:
    """One policy's cache fed the fixed transcript; ``score`` probes it without a trace."""

    def __init__(self, model: LlamaModel, policy: RecallPolicy, config: RecallConfig, system: str) -> None:
        self.policy = policy
        n_ctx = dense_size(model, config.dense_ctx, config.n_ctx) if policy == "dense" else config.n_ctx
        self.n_ctx = n_ctx
        ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads))
        self.template: TemplateChat | None = None
        self.chat: Chat | None = None
        if policy in ("truncate", "dense"):
            self.template = TemplateChat(
                model,
                ctx,
                n_ctx,
                system,
                SamplingSettings(temperature=0.0),
                drop_oldest=policy == "truncate",
                reserve=config.max_tokens if policy == "truncate" else 0,
            )
            return
        if policy == "sinkchat":
            sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=True)
        elif policy == "sinks-unpinned":
            sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=False)
        else:  # llama.cpp: n_keep 4 tokens, half of the rest discarded, cut at any token
            sinks = SinkSettings(sink_tokens=4, keep_system_prompt=False, aligned=False)
        self.chat = Chat(model, ctx, sinks=sinks, system_prompt=system, owns_model=False)
        if policy == "half-discard":
            self.chat.sinks = sinks.model_copy(update={"discard": max(1, self.chat.engine.layout.window // 2)})
            self.chat.reset(system)

    def add(self, user: str, reply: str) -> None:
        if self.chat is not None:
            self.chat.append_history([{"role": "user", "content": user}, {"role": "assistant", "content": reply}])
        else:
            assert self.template is not None
            self.template.history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]

    def score(self, question: str, candidates: Sequence[str]) -> list[float] | None:
        """Each candidate's log-probability; None when the history no longer fits (dense)."""
        if self.chat is not None:
            return self.chat.score_replies(question, candidates)
        assert self.template is not None
        try:
            return score_template(self.template, question, candidates)
        except ContextFull:
            return None

    @property
    def n_cached(self) -> int:
        return self.chat.stats.n_cached if self.chat is not None else self.template.n_cached  # type: ignore[union-attr]

    def close(self) -> None:
        if self.chat is not None:
            self.chat.close()
        elif self.template is not None:
            self.template.ctx.close()


def score_template(chat: TemplateChat, question: str, candidates: Sequence[str]) -> list[float]:
    """Teacher-forced scores on a re-rendering chat: the question rendered with the history that fits."""
    messages = [*chat.history, {"role": "user", "content": question}]
    tokens = chat._prompt(messages)
    while len(tokens) + chat.reserve > chat.n_ctx and chat.drop_oldest and len(messages) > 1:
        messages = messages[2:]
        tokens = chat._prompt(messages)
    targets = [chat.model.tokenize(c, parse_special=False) or [chat.model.eos] for c in candidates]
    if len(tokens) + max(len(t) for t in targets) >= chat.n_ctx:
        raise ContextFull(f"the history ({len(tokens):,} tokens) no longer fits n_ctx {chat.n_ctx:,}")
    chat.load(tokens)
    scores = chat.engine.score_continuations(chat.ctx.logits(-1), targets, "raw", 1)
    # The question goes too; the history it followed stays, as a front end's prompt cache would keep it.
    chat.engine.truncate(common_prefix(tokens, chat._prompt([*messages[:-1], {"role": "user", "content": ""}])))
    return scores


class Probe(BaseModel):
    policy: str
    turn: int
    fact: FactKind
    answer: str
    rank: int | None
    n_candidates: int
    margin: float | None
    logp: float | None
    cached: int
    seconds: float


def run_recall(model: LlamaModel, config: RecallConfig, script: Script, *, progress: bool = True) -> list[Probe]:
    """Every policy replays the transcript; the probes at each checkpoint, policy by policy."""
    rows: list[Probe] = []
    for policy in config.policies:
        replay = Replay(model, policy, config, script.system)
        try:
            with Progress(len(script.turns), policy, enabled=progress, unit="turn") as bar:
                for number, (user, reply) in enumerate(script.turns, start=1):
                    replay.add(user, reply)
                    for fact in script.probes.get(number, []):
                        started = time.perf_counter()
                        scores = replay.score(fact.question, fact.candidates)
                        rank, margin = rank_and_margin(scores, 0) if scores else (None, None)
                        rows.append(
                            Probe(
                                policy=policy,
                                turn=number,
                                fact=fact.kind,
                                answer=fact.answer,
                                rank=rank,
                                n_candidates=len(fact.candidates),
                                margin=margin,
                                logp=scores[0] if scores else None,
                                cached=replay.n_cached,
                                seconds=time.perf_counter() - started,
                            )
                        )
                    bar.update(1)
        finally:
            replay.close()
    return rows


COLUMNS = (
    ("policy", "policy"),
    ("fact", "fact"),
    ("checkpoints", "probes"),
    ("top1", "rank 1"),
    ("median_rank", "median rank"),
    ("first_margin", "first margin"),
    ("last_margin", "last margin"),
    ("min_margin", "min margin"),
)


def summary(rows: Sequence[Probe]) -> list[dict[str, object]]:
    """Per policy and fact kind: how often the true answer ranked first, and its margins."""
    import statistics

    out = []
    keys = dict.fromkeys((r.policy, r.fact) for r in rows)
    for policy, fact in keys:
        mine = [r for r in rows if r.policy == policy and r.fact == fact and r.rank is not None]
        margins = [r.margin for r in mine if r.margin is not None]
        out.append(
            {
                "policy": policy,
                "fact": fact,
                "checkpoints": len(mine),
                "top1": sum(r.rank == 1 for r in mine),
                "median_rank": statistics.median(r.rank for r in mine) if mine else None,  # type: ignore[type-var]
                "first_margin": margins[0] if margins else None,
                "last_margin": margins[-1] if margins else None,
                "min_margin": min(margins) if margins else None,
            }
        )
    return out


def write_results(rows: Sequence[Probe], script: Script, out: Path) -> dict[str, Path | None]:
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    files: dict[str, Path | None] = {
        "probes": write_csv(out / "recall_probes.csv", [r.model_dump() for r in rows]),
        "summary": write_csv(out / "recall_summary.csv", summary(rows)),
        "transcript": write_csv(
            out / "recall_transcript.csv",
            [{"turn": i, "user": u, "reply": a} for i, (u, a) in enumerate(script.turns, start=1)],
        ),
    }
    if plots.available():
        files["plot"] = plot(rows, out / "recall.png")
    return files


def plot(rows: Sequence[Probe], path: Path) -> Path:
    from sinkchat.bench.plots import color, pyplot

    plt = pyplot()
    kinds: tuple[FactKind, ...] = ("system", "early", "recent")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, kind in zip(axes, kinds, strict=True):
        for policy in dict.fromkeys(r.policy for r in rows):
            mine = [r for r in rows if r.policy == policy and r.fact == kind and r.margin is not None]
            if mine:
                label = policy
                ax.plot([r.turn for r in mine], [r.margin for r in mine], marker="o", ms=3, lw=1.3, label=label,
                        color=color(policy))  # fmt: skip
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(f"{kind} fact")
        ax.set_xlabel("turn")
    axes[0].set_ylabel("log-prob margin of the true answer\nover the best distractor (> 0: recalled)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
