"""The paired, teacher-forced chat quality measure (:mod:`sinkchat.bench.paired`) without weights.

A fixed reply read by ``Chat.read_exchange`` must leave the cache a live chat leaves, and the
rows it returns must be the predictions of each reply token; the oracle (a re-rendering
front end reading from an empty cache) must hold the same text as ``truncate``; and the KL /
NLL arithmetic and the lockstep order are checked against direct computations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

import sinkchat.chat as chat_module
from models.templates import template_text
from sinkchat.bench import paired
from sinkchat.bench.chat_bench import TemplateChat
from sinkchat.bench.report import interleave, segment_rates, spread
from sinkchat.chat import Chat
from sinkchat.config import SinkSettings
from tests.fake_model import FakeModel, ScriptedSampler
from tests.test_recall import VOCAB, CopyingContext

SYSTEM = "You are terse."


def exchanges(n: int) -> list[tuple[str, str]]:
    return [(f"Question {i}: what about {i}?", f"Answer {i}, a reply with some filler words.") for i in range(n)]


def fake_chat(monkeypatch: pytest.MonkeyPatch, n_ctx: int = 400) -> tuple[Chat, CopyingContext]:
    monkeypatch.setattr(chat_module, "Sampler", ScriptedSampler)
    ctx = CopyingContext(n_ctx)
    model = FakeModel(template_text("chatml"))
    return Chat(model, ctx, sinks=SinkSettings(), system_prompt=SYSTEM), ctx  # type: ignore[arg-type]


def test_a_read_exchange_leaves_the_cache_a_live_chat_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    live, live_ctx = fake_chat(monkeypatch)
    replayed, ctx = fake_chat(monkeypatch)
    for user, reply in exchanges(14):
        live_ctx.say(reply)
        assert "".join(live.send(user)) == reply
        targets, rows = replayed.read_exchange(user, reply)
        assert targets == [ord(c) for c in reply] and rows.shape == (len(reply), VOCAB)
        assert ctx.cells == live_ctx.cells, "the same cache, position by position"
        assert replayed.messages == live.messages
    assert replayed.stats.shifts == live.stats.shifts > 0, "evictions happened, and alike"


def test_row_i_is_the_prediction_of_reply_token_i(monkeypatch: pytest.MonkeyPatch) -> None:
    """The copying model predicts a reply that repeats the question: an off-by-one would miss."""
    chat, _ = fake_chat(monkeypatch)
    targets, rows = chat.read_exchange("Repeat: QXZJVKWBG", "QXZJVKWBG")
    predicted = np.argmax(rows, axis=-1)
    assert list(predicted[2:]) == targets[2:], "after two characters the copy rule knows the rest"
    nll = paired.token_nll(rows, targets)
    assert nll[2:].max() < nll[:2].min()


def template_chat(n_ctx: int, *, fresh: bool) -> tuple[TemplateChat, CopyingContext]:
    ctx = CopyingContext(n_ctx)
    model = FakeModel(template_text("chatml"))
    chat = TemplateChat(model, ctx, n_ctx, SYSTEM, None, drop_oldest=True, reserve=60, fresh=fresh)  # type: ignore[arg-type]
    return chat, ctx


def test_the_oracle_reads_what_truncate_holds_from_an_empty_cache() -> None:
    truncate, t_ctx = template_chat(400, fresh=False)
    oracle, o_ctx = template_chat(400, fresh=True)
    for user, reply in exchanges(12):
        before_t, before_o = t_ctx.decoded, o_ctx.decoded
        got_t = truncate.read_exchange(user, reply)
        got_o = oracle.read_exchange(user, reply)
        assert t_ctx.contents() == o_ctx.contents(), "the same text in both caches"
        assert o_ctx.decoded - before_o == oracle.n_cached, "the oracle read everything again"
        row = paired.compare("truncate", 1, got_t, paired.Reference.of(got_o), 0.0, truncate.n_cached)
        assert row.kl == 0 and row.agree == 1 and row.nll == row.oracle_nll
        assert t_ctx.decoded - before_t <= o_ctx.decoded - before_o
    assert len(truncate.history) < 24, "the oldest exchanges were dropped to fit"
    assert oracle.n_cached + 60 <= 400


def test_kl_and_nll_match_a_direct_computation() -> None:
    rng = np.random.default_rng(3)
    p, q = rng.normal(size=(40, 50)) * 3, rng.normal(size=(40, 50)) * 3
    pp = np.exp(p) / np.exp(p).sum(axis=1, keepdims=True)
    qq = np.exp(q) / np.exp(q).sum(axis=1, keepdims=True)
    expected = (pp * np.log(pp / qq)).sum(axis=1)
    assert np.allclose(paired.token_kl(p, q, block=7), expected)
    assert np.allclose(paired.token_kl(p, p), 0) and (paired.token_kl(p, q) > 0).all()
    targets = rng.integers(0, 50, size=40)
    assert np.allclose(paired.token_nll(q, targets), -np.log(qq[np.arange(40), targets]))
    # Shifting every logit of a row changes nothing.
    assert np.allclose(paired.token_kl(p + 1000.0, q - 5.0), expected)


def test_compare_pairs_rows_only_on_the_same_reply_tokens() -> None:
    logits = np.zeros((3, 8))
    logits[np.arange(3), [1, 2, 3]] = 4.0
    oracle = paired.Reference.of(([1, 2, 3], logits))
    assert oracle is not None and paired.Reference.of(None) is None and paired.Reference.of(([], logits[:0])) is None
    same = paired.compare("p", 5, ([1, 2, 3], logits.copy()), oracle, 0.1, 9)
    assert same.kl == 0 and same.agree == 1 and same.tokens == 3 and same.turn == 5
    flat = paired.compare("p", 5, ([1, 2, 3], np.zeros((3, 8))), oracle, 0.1, 9)
    assert flat.kl is not None and flat.kl > 0 and flat.nll == pytest.approx(np.log(8))
    assert flat.nll > flat.oracle_nll  # type: ignore[operator]
    with pytest.raises(ValueError, match="other tokens"):
        paired.compare("p", 5, ([1, 2, 4], logits), oracle, 0.1, 9)
    full = paired.compare("dense", 6, None, oracle, 0.1, 9)
    assert full.nll is None and full.kl is None
    alone = paired.compare("p", 6, ([1, 2, 3], logits), None, 0.1, 9)
    assert alone.nll is not None and alone.kl is None


class StubReader:
    """Logits that are the oracle's plus a policy's own offset on one token."""

    def __init__(self, name: str, skew: float, log: list[str], full_after: int | None = None) -> None:
        self.name, self.skew, self.log, self.full_after = name, skew, log, full_after
        self.turns = 0

    def read(self, user: str, reply: str) -> tuple[list[int], Any] | None:
        self.log.append(self.name)
        self.turns += 1
        if self.full_after is not None and self.turns > self.full_after:
            return None
        rows = np.zeros((2, 4))
        rows[:, 0] += self.skew
        return [1, 2], rows

    def score(self, question: str, candidates: Sequence[str]) -> list[float] | None:
        return None

    @property
    def n_cached(self) -> int:
        return 10 * self.turns

    def close(self) -> None:
        pass


def test_replay_reads_in_lockstep_with_a_rotating_order_and_scores_against_the_oracle() -> None:
    log: list[str] = []
    oracle = StubReader(paired.ORACLE, 0.0, log)
    readers = [StubReader("a", 0.0, log), StubReader("b", 2.0, log), StubReader("dense", 0.0, log, full_after=2)]
    seen: list[int] = []
    rows = paired.replay(readers, oracle, [("q", "r")] * 4, after_turn=seen.append, progress=False)  # type: ignore[arg-type]
    assert seen == [1, 2, 3, 4]
    firsts = [log[i * 4] for i in range(4)]
    assert len(set(firsts)) == 4, f"each turn starts with another reader: {firsts}"
    by = {(r.policy, r.turn): r for r in rows}
    assert by[("a", 3)].kl == 0 and by[("b", 3)].kl > 0 and by[(paired.ORACLE, 3)].kl == 0  # type: ignore[operator]
    assert by[("dense", 2)].kl == 0 and by[("dense", 3)].nll is None
    table = {r["policy"]: r for r in paired.summary(rows)}
    assert table["dense"]["scored"] == 2 and table["a"]["scored"] == 4
    assert table["b"]["nll_delta"] > 0 and table["a"]["nll_delta"] == 0  # type: ignore[operator]
    assert table["b"]["s_min"] <= table["b"]["s_median"] <= table["b"]["s_max"]  # type: ignore[operator]


def test_interleave_rotates_the_first_and_runs_each_to_its_end() -> None:
    log: list[tuple[str, int]] = []

    def steps(name: str, n: int):  # noqa: ANN202
        for i in range(n):
            log.append((name, i))
            yield

    interleave([steps("a", 3), steps("b", 1), steps("c", 2)])
    assert sorted(log) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0), ("c", 1)]
    assert log[0][0] == "a" and log[3][0] != "a", "the second round starts with another policy"
    assert [i for name, i in log if name == "a"] == [0, 1, 2]


def test_spread_and_segment_rates() -> None:
    assert spread([]) == (None, None, None)
    assert spread([3.0, 1.0, 2.0, 10.0]) == (1.0, 2.5, 10.0)
    rates = segment_rates([10] * 20, [0.1] * 10 + [1.0] * 10, segments=4)
    assert rates[0] == pytest.approx(100.0) and rates[-1] == pytest.approx(10.0) and len(rates) == 4
    assert segment_rates([], []) == []
