"""Teacher-forced probes (``Chat.score_replies``) on the fake model: nothing generated, nothing left behind.

The fake context's logits come from one rule, the induction-head one: after two characters,
expect what followed them the last time they appeared in the cache.  So a fact still in the
cache can be copied into its answer, and a fact that was evicted cannot.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import sinkchat.chat as chat_module
from models.templates import template_text
from sinkchat.bench.recall import rank_and_margin
from sinkchat.chat import Chat
from sinkchat.config import SinkSettings
from tests.fake_model import FakeContext, FakeModel, ScriptedSampler

VOCAB = 128


class CopyingContext(FakeContext):
    """A :class:`FakeContext` with logits: a copying model over ASCII."""

    def decode(self, tokens: Sequence[int], start: int, logits: str = "last") -> None:
        super().decode(tokens, start, logits)
        self._last = (start, len(tokens))

    def _row(self, pos: int) -> np.ndarray:
        cells = dict(self.cells)
        row = np.zeros(VOCAB, dtype=np.float32)
        key = (cells.get(pos - 1), cells.get(pos))
        for q in range(pos - 1, 0, -1):
            if (cells.get(q - 1), cells.get(q)) == key and q + 1 in cells and q + 1 <= pos:
                row[cells[q + 1] % VOCAB] = 8.0
                break
        return row

    def logits(self, index: int = -1) -> np.ndarray:
        start, n = self._last
        return self._row(start + n - 1 if index < 0 else start + index)

    def all_logits(self, n: int) -> np.ndarray:
        start, m = self._last
        return np.stack([self._row(start + i) for i in range(m)])[:n]


SYSTEM = "The password is heliotrope."
ANSWERS = ["marigold", "lavender", "heliotrope", "begonia"]


def copying_chat(
    monkeypatch: pytest.MonkeyPatch, *, n_ctx: int = 600, keep: bool = True
) -> tuple[Chat, CopyingContext]:
    monkeypatch.setattr(chat_module, "Sampler", ScriptedSampler)
    ctx = CopyingContext(n_ctx)
    chat = Chat(
        FakeModel(template_text("chatml")), ctx, sinks=SinkSettings(keep_system_prompt=keep), system_prompt=SYSTEM
    )  # type: ignore[arg-type]
    return chat, ctx


def talk(chat: Chat, ctx: CopyingContext, turns: int, start: int = 0) -> None:
    for i in range(start, start + turns):
        ctx.say(f"Reply number {i}, with a few words of filler text.")
        list(chat.send(f"Question {i}: tell me something about the number {i}."))


def test_a_probe_leaves_the_cache_and_the_chat_exactly_as_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    chat, ctx = copying_chat(monkeypatch)
    twin, twin_ctx = copying_chat(monkeypatch)
    talk(chat, ctx, 3)
    talk(twin, twin_ctx, 3)
    before = (list(ctx.cells), list(chat.engine.tokens), copy.deepcopy(chat.engine.layout))
    decoded = ctx.decoded
    scores = chat.score_replies("What is the password?", ANSWERS)
    assert ctx.decoded > decoded, "the probe really ran"
    assert (list(ctx.cells), list(chat.engine.tokens), chat.engine.layout) == before
    assert chat.messages == twin.messages and chat.stats.shifts == twin.stats.shifts
    assert len(scores) == 4
    # ... and the chat goes on exactly as one that was never probed, shifts included.
    talk(chat, ctx, 12, start=3)
    talk(twin, twin_ctx, 12, start=3)
    assert ctx.cells == twin_ctx.cells and chat.stats.shifts == twin.stats.shifts > 0


def test_a_fact_in_the_cache_ranks_first_and_an_evicted_one_does_not(monkeypatch: pytest.MonkeyPatch) -> None:
    pinned, ctx = copying_chat(monkeypatch, keep=True)
    unpinned, ctx2 = copying_chat(monkeypatch, keep=False)
    for chat, c in ((pinned, ctx), (unpinned, ctx2)):
        talk(chat, c, 2)
    early = [
        rank_and_margin(s, 2) for s in (c.score_replies("What is the password?", ANSWERS) for c in (pinned, unpinned))
    ]
    assert early[0][0] == 1 and early[1][0] == 1 and early[0][1] > 0, "both still hold the system prompt"
    for chat, c in ((pinned, ctx), (unpinned, ctx2)):
        talk(chat, c, 15, start=2)
    assert SYSTEM not in "".join(chr(t) for _, t in sorted(ctx2.cells)), "the unpinned system prompt was evicted"
    late = [
        rank_and_margin(s, 2) for s in (c.score_replies("What is the password?", ANSWERS) for c in (pinned, unpinned))
    ]
    assert late[0] == early[0], "pinned: the fact scores as on turn 2"
    assert late[1][0] > 1 or late[1][1] <= 0, "evicted: it no longer wins"


def test_rank_and_margin_count_against_the_distractors() -> None:
    assert rank_and_margin([-5.0, -1.0, -3.0], 1) == (1, 2.0)
    assert rank_and_margin([-5.0, -1.0, -3.0], 2) == (2, -2.0)
    assert rank_and_margin([-1.0, -1.0, -3.0], 0) == (2, 0.0), "a tie does not count as a win"
    assert rank_and_margin([-2.0, -9.0], 1) == (2, -7.0)


def test_a_transcript_is_read_back_only_for_the_same_plan_and_echoed_facts_are_flagged(tmp_path: Path) -> None:
    from sinkchat.bench.recall import RecallConfig, leaks, plan, read_transcript
    from sinkchat.bench.report import write_csv
    from sinkchat.errors import SinkchatError

    config = RecallConfig(turns=12, every=4)
    users, probes = plan(config)
    replies = [f"Reply {i}." for i in range(len(users))]
    replies[5] = "You said the password is Heliotrope."  # a base model echoing its prompt
    path = write_csv(
        tmp_path / "t.csv",
        [{"turn": i + 1, "user": u, "reply": r} for i, (u, r) in enumerate(zip(users, replies, strict=True))],
    )
    script = read_transcript(path, config)
    assert script.turns == list(zip(users, replies, strict=True)) and script.probes == probes
    assert leaks(script) == [6]
    with pytest.raises(SinkchatError, match="another conversation"):
        read_transcript(path, RecallConfig(turns=12, every=6))
    with pytest.raises(SinkchatError, match="cannot read"):
        read_transcript(tmp_path / "missing.csv", config)
