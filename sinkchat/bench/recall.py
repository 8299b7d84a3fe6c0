"""``sinkchat bench recall``: what a long chat can still recall, turn after turn, per cache policy.

Facts are planted in known places: in the system prompt, in the first user turn, and in a
recent user turn (a new one before every checkpoint).  One fixed transcript (generated once,
greedily, then replayed) runs through every policy's cache, so the policies are compared on
the same history.  At each checkpoint every fact is probed by teacher forcing: the question is
read as the next user message and the log-probability of the true answer is compared with
that of distractors of the same kind.  Nothing is generated, and the probe is undone
(:meth:`sinkchat.chat.Chat.score_replies`), so it never stays in the cache.  The same replay
scores every fixed reply against an oracle that re-reads what fits (:mod:`.paired`).

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

from models.chat_template import ChatTemplate
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from models.sampler import SamplingSettings
from sinkchat.bench.chat_bench import TemplateChat, load_prompts, template_for
from sinkchat.bench.paired import ORACLE, ChatReader, Reader, ReplyScore, TemplateReader, open_oracle, replay
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
    chat_template: str | None = Field(None, description="a template name or file, for a model without one")
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
    """Generate the replies once so every policy replays the same chat.

    ``truncate`` writes them (greedy): what an ordinary front end, which re-reads the history
    that fits, would have answered.  No sink-cache policy reads its own words.
    """
    users, probes = plan(config)
    ctx = LlamaContext(model, LoadOptions(n_ctx=config.n_ctx, n_threads=config.threads))
    sampling = SamplingSettings(temperature=0.0, repeat_penalty=1.1)
    writer = TemplateChat(model, ctx, config.n_ctx, system_prompt(), sampling, drop_oldest=True,
                          reserve=config.max_tokens, template=template_for(model, config.chat_template))  # fmt: skip
    turns = []
    try:
        with Progress(len(users), "transcript", enabled=progress, unit="turn") as bar:
            for user in users:
                reply = "".join(writer.send(user, max_tokens=config.max_tokens))
                turns.append((user, reply))
                bar.update(1)
    finally:
        ctx.close()
    return Script(system_prompt(), turns, probes)


def read_transcript(path: Path, config: RecallConfig) -> Script:
    """The replies of an earlier run (its ``recall_transcript.csv``, by this model or another one), so that
    two models are compared on the same words, or a model that does not chat reads a chat that makes sense."""
    from sinkchat.bench.report import read_csv
    from sinkchat.errors import SinkchatError

    try:
        rows = read_csv(Path(path).expanduser())
        turns = [(row["user"], row["reply"]) for row in rows]
    except (OSError, KeyError, UnicodeDecodeError) as exc:
        raise SinkchatError(f"cannot read the transcript {path}: {exc}") from None
    users, probes = plan(config)
    if [user for user, _ in turns] != users:
        raise SinkchatError(
            f"{path} holds another conversation ({len(turns)} turns): run it with the same --turns and --every"
        )
    return Script(system_prompt(), turns, probes)


def leaks(script: Script) -> list[int]:
    """Turns whose reply names the password or the sister: the fact is then in the history beyond its
    planted place, and recalling it says nothing about the cache (a base model may echo its prompt)."""
    answers = (SYSTEM_FACT.answer.lower(), EARLY_FACT.answer.lower())
    return [n for n, (_, reply) in enumerate(script.turns, start=1) if any(a in reply.lower() for a in answers)]


def open_reader(
    model: LlamaModel, policy: str, config: RecallConfig, system: str, template: ChatTemplate | None
) -> Reader:
    """One policy's cache, empty but for the system prompt, ready to replay the transcript."""
    if policy == ORACLE:
        return open_oracle(model, config.n_ctx, system, config.max_tokens, template, config.threads)
    n_ctx = dense_size(model, config.dense_ctx, config.n_ctx) if policy == "dense" else config.n_ctx
    ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=config.threads))
    if policy in ("truncate", "dense"):
        reserve = 0 if policy == "dense" else config.max_tokens
        chat = TemplateChat(model, ctx, n_ctx, system, SamplingSettings(temperature=0.0), drop_oldest=policy != "dense",
                            reserve=reserve, template=template)  # fmt: skip
        return TemplateReader(policy, chat)
    if policy == "sinkchat":
        sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=True)
    elif policy == "sinks-unpinned":
        sinks = SinkSettings(sink_tokens=config.sinks, keep_system_prompt=False)
    else:  # llama.cpp: n_keep 4 tokens, half of the rest discarded, cut at any token
        sinks = SinkSettings(sink_tokens=4, keep_system_prompt=False, aligned=False)
    chat = Chat(model, ctx, sinks=sinks, system_prompt=system, owns_model=False, template=template)
    if policy == "half-discard":
        chat.sinks = sinks.model_copy(update={"discard": max(1, chat.engine.layout.window // 2)})
        chat.reset(system)
    return ChatReader(policy, chat)


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


def run_recall(
    model: LlamaModel, config: RecallConfig, script: Script, *, progress: bool = True
) -> tuple[list[Probe], list[ReplyScore]]:
    """Every policy replays the transcript in lockstep (:func:`.paired.replay`): each fixed reply
    scored against the oracle, and at each checkpoint every fact probed under every policy."""
    template = template_for(model, config.chat_template)
    readers: list[Reader] = []
    probes: list[Probe] = []
    opened: list[Reader] = []
    try:
        oracle = open_reader(model, ORACLE, config, script.system, template)
        opened.append(oracle)
        for policy in config.policies:
            readers.append(open_reader(model, policy, config, script.system, template))
            opened.append(readers[-1])

        def probe(number: int) -> None:
            for fact in script.probes.get(number, []):
                shift = number % len(readers)
                for reader in readers[shift:] + readers[:shift]:
                    started = time.perf_counter()
                    scores = reader.score(fact.question, fact.candidates)
                    rank, margin = rank_and_margin(scores, 0) if scores else (None, None)
                    probes.append(
                        Probe(
                            policy=reader.name,
                            turn=number,
                            fact=fact.kind,
                            answer=fact.answer,
                            rank=rank,
                            n_candidates=len(fact.candidates),
                            margin=margin,
                            logp=scores[0] if scores else None,
                            cached=reader.n_cached,
                            seconds=time.perf_counter() - started,
                        )
                    )

        quality = replay(readers, oracle, script.turns, after_turn=probe, progress=progress)
    finally:
        for reader in opened:
            reader.close()
    order = {p: i for i, p in enumerate(config.policies)}
    probes.sort(key=lambda r: (order[r.policy], r.turn))
    return probes, quality


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


def write_results(
    rows: Sequence[Probe], quality: Sequence[ReplyScore], script: Script, out: Path, *, title: str = ""
) -> dict[str, Path | None]:
    from sinkchat.bench import paired, plots
    from sinkchat.bench.report import write_csv

    files: dict[str, Path | None] = {
        "probes": write_csv(out / "recall_probes.csv", [r.model_dump() for r in rows]),
        "summary": write_csv(out / "recall_summary.csv", summary(rows)),
        "quality": write_csv(out / "recall_quality.csv", [r.model_dump() for r in quality]),
        "quality_summary": write_csv(out / "recall_quality_summary.csv", paired.summary(quality)),
        "transcript": write_csv(
            out / "recall_transcript.csv",
            [{"turn": i, "user": u, "reply": a} for i, (u, a) in enumerate(script.turns, start=1)],
        ),
    }
    if plots.available():
        files["plot"] = plot(rows, out / "recall.png")
        files["quality_plot"] = paired.plot(quality, out / "recall_quality.png", title=title)
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
