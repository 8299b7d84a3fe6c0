"""Paired, teacher-forced chat quality: one fixed transcript read through every policy's cache.

When each policy generates its own replies, the conversations drift apart and are never
compared on the same history; and loops and copies get low perplexity, so scoring a
policy's own replies would reward them.  Here one transcript is fixed and every policy
reads the same exchanges.  At each assistant turn the *fixed* reply is scored under each
cache: its mean negative log-likelihood per token, and the per-token KL divergence from an
**oracle** that reads [BOS + system prompt + the newest whole exchanges that fit] from an
empty cache, which is what a chat front end that re-reads everything would see.

- ``KL(oracle || policy)``, averaged over the reply's tokens, is how far a cache's
  predictions are from re-reading; 0 is identical.  It is paired (same text, same turn)
  and deterministic.
- ``NLL`` of the reply, and its difference from the oracle's on the same turn.

The policies are read in lockstep, one exchange each in turn and in a rotating order, so
a load change on this shared machine lands on every policy alike (each row's time is the
time to read that exchange).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from models.chat_template import ChatTemplate
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions
from models.sampler import SamplingSettings
from sinkchat.bench.chat_bench import ContextFull, TemplateChat
from sinkchat.bench.report import Progress, spread
from sinkchat.chat import Chat
from sinkchat.engine import log_normalizer

ORACLE = "oracle"
"""The policy name of the oracle's own rows (KL 0 by definition; its time is the cost of re-reading)."""


class Reader(Protocol):
    """A cache that reads finished exchanges (the reply teacher-forced) and answers probes."""

    name: str

    def read(self, user: str, reply: str) -> tuple[list[int], Any] | None: ...
    def score(self, question: str, candidates: Sequence[str]) -> list[float] | None: ...
    @property
    def n_cached(self) -> int: ...
    def close(self) -> None: ...


@dataclass
class ChatReader:
    """A :class:`~sinkchat.chat.Chat` (the sink-cache policies)."""

    name: str
    chat: Chat

    def read(self, user: str, reply: str) -> tuple[list[int], Any] | None:
        return self.chat.read_exchange(user, reply)

    def score(self, question: str, candidates: Sequence[str]) -> list[float] | None:
        return self.chat.score_replies(question, candidates)

    @property
    def n_cached(self) -> int:
        return self.chat.stats.n_cached

    def close(self) -> None:
        self.chat.close()


@dataclass
class TemplateReader:
    """A re-rendering front end (``truncate``, ``dense``, the oracle); None once the history no longer fits."""

    name: str
    chat: TemplateChat
    full: bool = False

    def read(self, user: str, reply: str) -> tuple[list[int], Any] | None:
        if not self.full:
            try:
                return self.chat.read_exchange(user, reply)
            except ContextFull:
                self.full = True
        self.chat.history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        return None

    def score(self, question: str, candidates: Sequence[str]) -> list[float] | None:
        if self.full:
            return None
        try:
            return self.chat.score(question, candidates)
        except ContextFull:
            return None

    @property
    def n_cached(self) -> int:
        return self.chat.n_cached

    def close(self) -> None:
        self.chat.ctx.close()


def open_oracle(
    model: LlamaModel, n_ctx: int, system: str, reserve: int, template: ChatTemplate | None, threads: int
) -> TemplateReader:
    """The oracle: BOS + system prompt + the newest whole exchanges that fit with ``reserve`` tokens to
    spare (what ``truncate`` holds), read from an empty cache for every reply."""
    ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=threads))
    chat = TemplateChat(model, ctx, n_ctx, system, SamplingSettings(temperature=0.0), drop_oldest=True,
                        reserve=reserve, template=template, fresh=True)  # fmt: skip
    return TemplateReader(ORACLE, chat)


def log_softmax(logits: Any) -> np.ndarray:
    rows = np.asarray(logits, dtype=np.float64)
    return rows - log_normalizer(rows)[..., None]


def token_nll(logits: Any, targets: Sequence[int]) -> np.ndarray:
    """Negative log-likelihood of ``targets[i]`` under row ``i``."""
    rows = np.asarray(logits, dtype=np.float64)
    index = np.asarray(targets)
    return log_normalizer(rows) - rows[np.arange(len(index)), index]


def token_kl(reference: Any, logits: Any, *, block: int = 16) -> np.ndarray:
    """Per row, ``KL(softmax(reference) || softmax(logits))`` in nats (a few rows at a time: vocabularies are large)."""
    out = np.empty(len(reference))
    for at in range(0, len(reference), block):
        p = log_softmax(reference[at : at + block])
        q = log_softmax(logits[at : at + block])
        out[at : at + block] = (np.exp(p) * (p - q)).sum(axis=-1)
    return np.maximum(out, 0.0)


class ReplyScore(BaseModel):
    """One policy's reading of one fixed reply."""

    policy: str
    turn: int
    tokens: int
    nll: float | None
    """Mean NLL per token of the reply; None when the policy could not hold it (dense, full)."""
    oracle_nll: float | None
    kl: float | None
    """Mean per-token KL(oracle || policy)."""
    kl_max: float | None
    agree: float | None
    """Share of the reply's tokens where the policy's most likely token is the oracle's."""
    seconds: float
    cached: int


@dataclass(frozen=True)
class Reference:
    """The oracle's reading of one reply, with what every policy is compared on computed once."""

    targets: list[int]
    logits: Any
    nll: float
    top1: np.ndarray

    @classmethod
    def of(cls, got: tuple[list[int], Any] | None) -> Reference | None:
        if got is None or not got[0]:
            return None
        targets, logits = got
        return cls(targets, logits, float(token_nll(logits, targets).mean()), np.argmax(logits, axis=-1))


def compare(policy: str, turn: int, got: tuple[list[int], Any] | None, oracle: Reference | None,
            seconds: float, cached: int) -> ReplyScore:  # fmt: skip
    """One row: the policy's logits against the oracle's, on the same reply tokens."""
    empty = ReplyScore(policy=policy, turn=turn, tokens=0, nll=None, oracle_nll=None, kl=None, kl_max=None,
                       agree=None, seconds=seconds, cached=cached)  # fmt: skip
    if got is None or not got[0]:
        return empty
    targets, logits = got
    nll = float(token_nll(logits, targets).mean())
    if oracle is None:
        return empty.model_copy(update={"tokens": len(targets), "nll": nll})
    if oracle.targets != targets:
        raise ValueError(f"turn {turn}: {policy} read the reply as other tokens than the oracle")
    kl = token_kl(oracle.logits, logits)
    agree = float(np.mean(oracle.top1 == np.argmax(logits, axis=-1)))
    return ReplyScore(policy=policy, turn=turn, tokens=len(targets), nll=nll, oracle_nll=oracle.nll,
                      kl=float(kl.mean()), kl_max=float(kl.max()), agree=agree, seconds=seconds,
                      cached=cached)  # fmt: skip


def replay(
    readers: Sequence[Reader],
    oracle: Reader,
    turns: Sequence[tuple[str, str]],
    *,
    after_turn: Callable[[int], None] | None = None,
    progress: bool = True,
) -> list[ReplyScore]:
    """Every reader (and the oracle) reads the transcript in lockstep; a score per reader and turn.

    The order rotates every turn so no policy always runs first.  ``after_turn(n)`` runs
    once all have read turn ``n`` (the recall bench probes there).
    """
    rows: list[ReplyScore] = []
    everyone = [oracle, *readers]
    with Progress(len(turns), "replay", enabled=progress, unit="turn") as bar:
        for number, (user, reply) in enumerate(turns, start=1):
            shift = number % len(everyone)
            read: dict[str, tuple[tuple[list[int], Any] | None, float]] = {}
            for reader in everyone[shift:] + everyone[:shift]:
                started = time.perf_counter()
                got = reader.read(user, reply)
                read[reader.name] = (got, time.perf_counter() - started)
            reference = Reference.of(read[oracle.name][0])
            for reader in everyone:
                got, seconds = read[reader.name]
                rows.append(compare(reader.name, number, got, reference, seconds, reader.n_cached))
            if after_turn is not None:
                after_turn(number)
            bar.update(1)
    return rows


COLUMNS = (
    ("policy", "policy"),
    ("scored", "replies"),
    ("nll", "NLL"),
    ("nll_delta", "NLL - oracle"),
    ("kl_mean", "KL mean"),
    ("kl_median", "KL median"),
    ("kl_p90", "KL p90"),
    ("agree", "top-1 agree"),
    ("s_min", "s min"),
    ("s_median", "s median"),
    ("s_max", "s max"),
)


def summary(rows: Sequence[ReplyScore], *, after: int = 0) -> list[dict[str, object]]:
    """Per policy: over the replies it scored after turn ``after``, NLL, its paired difference from the
    oracle's, the KL (mean, median, 90th percentile of the per-reply means), top-1 agreement, and the
    spread of the time to read an exchange (all turns)."""
    out = []
    for policy in dict.fromkeys(r.policy for r in rows):
        mine = [r for r in rows if r.policy == policy]
        scored = [r for r in mine if r.turn > after and r.nll is not None and r.oracle_nll is not None]
        kls = [r.kl for r in scored if r.kl is not None]
        fastest, median, slowest = spread([r.seconds for r in mine if r.tokens])
        out.append(
            {
                "policy": policy,
                "scored": len(scored),
                "nll": statistics.fmean(r.nll for r in scored) if scored else None,  # type: ignore[misc]
                "nll_delta": statistics.fmean(r.nll - r.oracle_nll for r in scored) if scored else None,  # type: ignore[operator]
                "kl_mean": statistics.fmean(kls) if kls else None,
                "kl_median": statistics.median(kls) if kls else None,
                "kl_p90": float(np.percentile(kls, 90)) if kls else None,
                "agree": statistics.fmean(r.agree for r in scored if r.agree is not None) if scored else None,  # type: ignore[misc]
                "s_min": fastest,
                "s_median": median,
                "s_max": slowest,
            }
        )
    return out


def first_full_turn(rows: Sequence[ReplyScore], n_ctx: int, slack: int) -> int:
    """The first turn on which some evicting policy's cache was within ``slack`` of ``n_ctx``: the
    policies differ only from there on."""
    return min((r.turn for r in rows if r.policy != ORACLE and r.cached >= n_ctx - slack and r.cached <= n_ctx),
               default=0)  # fmt: skip


def plot(rows: Sequence[ReplyScore], path: Any, *, title: str, smooth: int = 5) -> Any:
    """Per-reply KL from the oracle and NLL minus the oracle's, per policy (a running mean over ``smooth`` turns)."""
    from sinkchat.bench.plots import color, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for policy in dict.fromkeys(r.policy for r in rows):
        if policy == ORACLE:
            continue
        mine = [r for r in rows if r.policy == policy and r.kl is not None]
        if not mine:
            continue
        turns = [r.turn for r in mine]
        for ax, values in ((axes[0], [r.kl for r in mine]), (axes[1], [r.nll - r.oracle_nll for r in mine])):  # type: ignore[operator]
            ax.plot(turns, running_mean(values, smooth), lw=1.4, label=policy, color=color(policy))  # type: ignore[arg-type]
    axes[0].set_ylabel(f"KL(oracle || policy), nats per token\n(running mean of {smooth} replies)")
    axes[1].set_ylabel("NLL of the fixed reply minus the oracle's")
    axes[1].axhline(0, color="black", lw=0.8)
    for ax in axes:
        ax.set_xlabel("turn")
    axes[0].set_yscale("symlog", linthresh=0.01)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def running_mean(values: Sequence[float], n: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= n:
            total -= values[i - n]
        out.append(total / min(i + 1, n))
    return out
