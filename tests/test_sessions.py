"""Saved sessions with the real model: instant resume, rebuilds, switching, persistence of every turn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sinkchat.chat import Chat
from sinkchat.locks import SessionLockedError
from sinkchat.opening import plan_open
from sinkchat.session import Session, SessionLibrary
from sinkchat.settings import Settings
from sinkchat.store import SessionSettings

pytestmark = pytest.mark.slow

GREEDY = {"temperature": 0.0, "seed": 1}
QUESTIONS = [
    "Name three colours of the rainbow.",
    "Tell me a short story about a lighthouse keeper.",
    "What is the boiling point of water?",
    "Describe a forest in autumn in a few sentences.",
]


@pytest.fixture
def library(tmp_path: Path) -> Iterator[SessionLibrary]:
    lib = SessionLibrary(tmp_path / "sessions")
    yield lib
    lib.close()


def load(model: Path, n_ctx: int = 256, **kw) -> Chat:
    return Chat.load(model, n_ctx=n_ctx, sampling=GREEDY, **kw)


def talk(session: Session | Chat, questions: list[str], max_tokens: int = 48) -> list[str]:
    return ["".join(session.send(q, max_tokens=max_tokens)) for q in questions]


def cache_is_consistent(chat: Chat) -> None:
    engine = chat.engine
    assert engine.n_cached <= chat.n_ctx
    assert engine.layout.n_cached == engine.n_cached
    assert chat.context.pos_max() == engine.n_cached - 1


def test_resume_from_the_snapshot_reads_nothing_and_continues_exactly(smollm2_path: Path, library) -> None:
    original = load(smollm2_path)
    session = Session.new(original, library)
    talk(session, QUESTIONS)
    assert original.engine.shifts > 0  # the history is longer than the cache
    session.close(close_chat=False)  # waits for the snapshot on disk, gives up the lock

    resumed_chat = load(smollm2_path)
    with Session.resume(resumed_chat, library, session.id) as resumed:
        assert resumed.resume_tokens == 0 and resumed.note is None
        assert resumed_chat.engine.tokens == original.engine.tokens
        assert resumed_chat.engine.layout == original.engine.layout
        assert resumed.messages == original.messages
        assert resumed.stats.shifts == original.stats.shifts
        cache_is_consistent(resumed_chat)
        # The same KV bytes, but laid out in fresh cells: the next-token distribution agrees
        # within this model's floating-point noise (see test_llama_backend: shift KL ~0.003-0.016).
        kl, same_argmax = next_token_kl(original, resumed_chat, "And what did I ask first?")
        assert same_argmax and kl < 0.02, kl
    original.close()


def test_resume_without_evictions_continues_bit_for_bit(smollm2_path: Path, library) -> None:
    original = load(smollm2_path, n_ctx=2048)
    session = Session.new(original, library)
    talk(session, QUESTIONS[:2])
    session.close(close_chat=False)
    with Session.resume(load(smollm2_path, n_ctx=2048), library, session.id) as resumed:
        assert resumed.resume_tokens == 0
        # Greedy decoding gives the very reply the chat that never stopped gives.
        assert talk(resumed, ["And what did I ask first?"]) == talk(original, ["And what did I ask first?"])
    original.close()


def next_token_kl(a: Chat, b: Chat, question: str) -> tuple[float, bool]:
    """KL(a || b) of the first reply token's distribution after the same question."""
    import numpy as np

    logits = []
    for chat in (a, b):
        chat._feed_user(chat._group + 1, question)
        logits.append(chat.context.logits().astype(np.float64))
    p, q = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in logits)
    return float((p * (np.log(p + 1e-300) - np.log(q + 1e-300))).sum()), int(p.argmax()) == int(q.argmax())


def test_every_turn_is_saved_as_it_happens(smollm2_path: Path, library) -> None:
    with Session.new(load(smollm2_path), library) as session:
        replies = talk(session, QUESTIONS[:2])
        stored = library.store.messages(session.id)
        assert [m.content for m in stored] == [QUESTIONS[0], replies[0], QUESTIONS[1], replies[1]]
        assert all(m.status == "complete" for m in stored)
        assert stored[1].finish in ("eos", "length")
        assert library.store.get(session.id).title == QUESTIONS[0]

        new_reply = "".join(session.regenerate(max_tokens=20))
        stored = library.store.messages(session.id)
        assert len(stored) == 4 and stored[-1].content == new_reply == session.messages[-1]["content"]


def test_a_snapshot_behind_the_messages_reads_only_the_rest(smollm2_path: Path, library) -> None:
    with Session.new(load(smollm2_path, n_ctx=512), library) as session:
        talk(session, QUESTIONS[:2])
        sid = session.id
    # A later exchange was committed, but the process died before its snapshot was written.
    _, reply = library.store.begin_exchange(sid, "One more question?")
    library.store.finish(reply, "One more answer.", "eos")
    with Session.resume(load(smollm2_path, n_ctx=512), library, sid) as resumed:
        assert 0 < resumed.resume_tokens < 40 and resumed.note is None
        assert [m["content"] for m in resumed.messages][-2:] == ["One more question?", "One more answer."]
        cache_is_consistent(resumed.chat)
        assert talk(resumed, ["Thanks!"], 16)[0]


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("n_ctx", "n_ctx 256 → 384"),
        ("type_k", "type_k f16 → q8_0"),
        ("corrupt", "damaged"),
        ("missing", "no snapshot"),
        ("sinks", "sink_tokens 4 → 8"),
    ],
)
def test_an_unusable_snapshot_means_a_rebuild(smollm2_path: Path, library, how: str, expected: str) -> None:
    with Session.new(load(smollm2_path), library) as session:
        talk(session, QUESTIONS[:3])
        sid, messages = session.id, list(session.messages)
    snapshot = library.snapshot_path(sid)
    options: dict = {}
    if how == "n_ctx":
        options["n_ctx"] = 384
    elif how == "type_k":
        options["type_k"] = "q8_0"
    elif how == "sinks":
        options["sink_tokens"] = 8
    elif how == "corrupt":
        data = bytearray(snapshot.read_bytes())
        data[len(data) // 2] ^= 0xFF
        snapshot.write_bytes(bytes(data))
    else:
        snapshot.unlink()
    with Session.resume(load(smollm2_path, **options), library, sid) as resumed:
        assert resumed.note is not None and expected in resumed.note and "rebuilt the cache" in resumed.note
        assert resumed.messages == messages  # nothing lost
        assert resumed.resume_tokens > 0
        cache_is_consistent(resumed.chat)
        assert talk(resumed, ["Thanks!"], 16)[0]
    assert len(library.store.messages(sid)) == len(messages) + 2


def test_switching_sessions_in_one_model(smollm2_path: Path, library) -> None:
    chat = load(smollm2_path, n_ctx=512)
    session = Session.new(chat, library)
    talk(session, QUESTIONS[:1])
    first, first_messages = session.id, list(session.messages)
    session.reset()
    assert session.id != first and session.messages == []
    talk(session, QUESTIONS[2:3])
    second = session.id
    session.switch(first)
    assert session.id == first and session.messages == first_messages
    assert session.resume_tokens == 0  # from its snapshot
    assert not library.is_open(second) or second == session.id
    session.switch(second)
    assert [m["content"] for m in session.messages][0] == QUESTIONS[2]
    session.delete_current()
    assert not library.store.exists(second) and session.id not in (first, second)
    session.close()


def test_one_process_per_session(smollm2_path: Path, library) -> None:
    chat = load(smollm2_path)
    with Session.new(chat, library) as session, pytest.raises(SessionLockedError, match="open in another sinkchat"):
        Session.resume(load(smollm2_path), library, session.id)


def test_system_prompt_and_sampling_are_remembered(smollm2_path: Path, library) -> None:
    with Session.new(load(smollm2_path, system_prompt="You are a pirate."), library) as session:
        talk(session, QUESTIONS[:1], 8)
        session.sampling = session.sampling.model_copy(update={"temperature": 0.3})
        session.remember_max_tokens(None)  # "no limit" is a choice too, kept apart from "never chosen"
        sid = session.id
    info = library.store.get(sid)
    assert info.system_prompt == "You are a pirate." and info.settings.sampling["temperature"] == 0.3
    assert info.settings.max_tokens == 0
    with Session.resume(load(smollm2_path), library, sid) as resumed:
        assert resumed.system_prompt == "You are a pirate." and resumed.sampling.temperature == 0.3
        assert resumed.max_tokens == 0
        assert resumed.resume_tokens == 0
        resumed.remember_max_tokens(64)
    assert library.store.get(sid).settings.max_tokens == 64


def test_a_missing_model_file_falls_back_with_a_message(smollm2_path: Path, library, tmp_path: Path) -> None:
    gone = tmp_path / "gone.gguf"
    sid = library.store.create(model_path=str(gone), settings=SessionSettings(n_ctx=300)).id
    _, reply = library.store.begin_exchange(sid, "Hello")
    library.store.finish(reply, "Hi there!", "eos")
    plan = plan_open(library, Settings(), resume=sid[:6])
    assert plan.model_path == smollm2_path and plan.load_options["n_ctx"] == 300
    assert any("gone.gguf is missing" in note for note in plan.notes)
    with Session.resume(Chat.load(plan.model_path, **plan.load_options), library, sid) as resumed:
        assert [m["content"] for m in resumed.messages] == ["Hello", "Hi there!"]
        assert talk(resumed, ["How are you?"], 8)[0]
    assert library.store.get(sid).model_path == str(smollm2_path)


def test_a_full_disk_never_ends_the_chat(smollm2_path: Path, library, monkeypatch: pytest.MonkeyPatch) -> None:
    import sinkchat.session as session_module
    from sinkchat.store import StoreError

    with Session.new(load(smollm2_path), library) as session:
        talk(session, QUESTIONS[:1], 8)
        saved = library.store.messages(session.id)

        def full(*args, **kwargs):
            raise StoreError("cannot save to the sessions database: database or disk is full")

        monkeypatch.setattr(library.store, "begin_exchange", full)
        assert talk(session, ["Still there?"], 8)[0]  # the reply comes anyway
        assert session.save_error and "disk is full" in session.save_error
        assert library.store.messages(session.id) == saved  # what was saved stays as it was

        def no_space(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.undo()
        monkeypatch.setattr(session_module, "write_snapshot", no_space)
        assert talk(session, ["And now?"], 8)[0]
        assert session.save_error is None and session.flush(30)
        assert "No space left" in (session._writer.last_error or "")
        assert len(library.store.messages(session.id)) == len(saved) + 2  # messages saved, snapshot not


def test_a_chat_without_messages_leaves_no_session(smollm2_path: Path, library) -> None:
    session = Session.new(load(smollm2_path), library)
    empty = session.id
    session.reset()  # a new chat: the empty one is forgotten
    assert not library.store.exists(empty)
    talk(session, ["Hi"], 4)
    kept = session.id
    session.reset()
    session.close()
    assert [s.id for s in library.store.list()] == [kept]


def test_switching_models_on_an_empty_chat_starts_a_new_session(smollm2_path: Path, library) -> None:
    from tui.backend import LibrarySessions

    sessions = LibrarySessions(library)
    first = sessions.open(load(smollm2_path), None)
    empty = first.id
    first.close()  # the UI closes the old model's session before the new model opens it
    second = sessions.open(load(smollm2_path), empty)  # found live under tmux: "no session …"
    assert second.id != empty and second.messages == []
    talk(second, ["Hi"], 4)
    second.close()
    third = sessions.open(load(smollm2_path), second.id)
    assert third.id == second.id and len(third.messages) == 2
    third.close()


@pytest.mark.parametrize("n_ctx", [2048, 256])
def test_going_back_to_edit_a_message_continues_as_if_it_had_been_sent_then(
    smollm2_path: Path, library, n_ctx: int
) -> None:
    """``rewind``: at 2048 the cut is in the cache; at 256 the first dropped exchange was evicted (a refill)."""
    with Session.new(load(smollm2_path, n_ctx=n_ctx), library) as session:
        talk(session, QUESTIONS[:3], 40)
        session.rewind(2)
        assert [m["content"] for m in session.messages if m["role"] == "user"] == QUESTIONS[:1]
        cache_is_consistent(session.chat)
        after = talk(session, ["What is the capital of France?"], 24)[0]
        sid = session.id
        tokens = list(session.chat.engine.tokens)
    saved = library.store.messages(sid)
    assert [m.content for m in saved if m.role == "user"] == [QUESTIONS[0], "What is the capital of France?"]
    # the same conversation sent straight, never edited, reads the same cache and gives the same reply
    with Session.new(load(smollm2_path, n_ctx=n_ctx), library) as straight:
        talk(straight, QUESTIONS[:1], 40)
        assert talk(straight, ["What is the capital of France?"], 24)[0] == after
        if n_ctx == 2048:
            assert list(straight.chat.engine.tokens) == tokens
