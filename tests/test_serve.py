"""``sinkchat serve`` with the official OpenAI client, on the fake model (fast, no weights).

What the cache holds is checked character by character: the fake model's tokens are
characters, and its reply is a digest of what it saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from sinkchat.session import as_exchanges
from tests.serve_harness import MODEL, FakeServer, patch_sampler, raw_request


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    patch_sampler(monkeypatch)
    srv = FakeServer(tmp_path)
    yield srv
    srv.stop()


def conversation(srv: FakeServer, system: str, questions: list[str], **options: object) -> list[dict]:
    """Ask each question in turn, sending the whole history each time, as a client does; the facts of each."""
    messages: list[dict] = [{"role": "system", "content": system}]
    facts = []
    for q in questions:
        messages.append({"role": "user", "content": q})
        reply, fact = srv.ask(messages, **options)
        messages.append({"role": "assistant", "content": reply})
        facts.append(fact)
    return facts


def test_a_conversation_is_continued_not_read_again(server: FakeServer) -> None:
    facts = conversation(server, "Be kind.", ["first question", "second question", "third"])
    assert [f["action"] for f in facts] == ["new", "continued", "continued"]
    assert len({f["session"] for f in facts}) == 1
    assert not any(f["rebuilt"] for f in facts)
    # Turn 3 reads only its own message and the reply's opening, not the history.
    turn3 = len("<|im_start|>user\nthird<|im_end|>\n<|im_start|>assistant\n")
    assert facts[2]["evaluated_tokens"] == turn3
    assert facts[2]["reused_tokens"] == facts[2]["prompt_tokens"] - turn3 > 100
    # The saved session is the conversation, and the cache holds exactly it.
    stored = server.library.store.messages(facts[0]["session"])
    assert [m.content for m in stored][::2] == ["first question", "second question", "third"]
    assert server.view().startswith("<|im_start|>system\nBe kind.<|im_end|>\n")


def test_streaming_gives_the_same_reply_and_the_facts(server: FakeServer) -> None:
    messages = [{"role": "user", "content": "stream please"}]
    whole, _ = server.ask(messages)
    with server.client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    ) as response:
        # A first message again is a conversation of its own (another client may have said the same).
        assert response.headers["x-sinkchat-action"] == "new"
        assert int(response.headers["x-sinkchat-evaluated-tokens"]) > 0
        session = response.headers["x-sinkchat-session"]
        chunks = list(response.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    usage = [c.usage for c in chunks if c.usage]
    assert text == whole, "the same view gives the same reply, streamed or not"
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == "stop"
    assert finish[0].model_extra["sinkchat"]["session"] == session
    assert len(usage) == 1 and usage[0].completion_tokens == len(text) and usage[0].prompt_tokens > 0


def test_a_regenerate_replaces_the_last_reply_in_place(server: FakeServer) -> None:
    facts = conversation(server, "S", ["q1", "q2"])
    sid = facts[0]["session"]
    server.ctx.say("a second take")
    history = server.library.store.messages(sid)
    messages = [{"role": "system", "content": "S"}] + [{"role": m.role, "content": m.content} for m in history[:3]]
    reply, fact = server.ask(messages)
    assert reply == "a second take"
    assert (fact["action"], fact["session"], fact["rebuilt"]) == ("regenerated", sid, False)
    assert fact["evaluated_tokens"] == len("<|im_start|>assistant\n"), "only the reply's opening is read again"
    stored = server.library.store.messages(sid)
    assert [m.content for m in stored][:3] == [m.content for m in history[:3]]
    assert len(stored) == 4 and stored[3].content == "a second take"
    assert server.view().endswith("a second take<|im_end|>\n")
    assert history[3].content not in server.view()


def test_an_edited_history_is_a_new_conversation_and_the_old_one_stays(server: FakeServer) -> None:
    facts = conversation(server, "S", ["q1", "q2", "q3"])
    old = facts[0]["session"]
    before = [m.content for m in server.library.store.messages(old)]
    edited = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1 (edited)"}]
    edited += [{"role": "assistant", "content": before[1]}, {"role": "user", "content": "q2"}]
    _, fact = server.ask(edited)
    assert fact["action"] == "new" and fact["session"] != old
    assert fact["rebuilt"] and "not seen" in fact["reason"]
    assert [m.content for m in server.library.store.messages(old)] == before
    assert "q1 (edited)" in server.view() and "q3" not in server.view()


def test_a_named_conversation_follows_the_client_edits_included(server: FakeServer) -> None:
    headers = {"X-Sinkchat-Session": "my notes"}
    facts = conversation(server, "S", ["q1", "q2", "q3"], extra_headers=headers)
    sid = facts[0]["session"]
    assert {f["session"] for f in facts} == {sid}
    assert server.library.store.get(sid).title == "my notes"
    stored = [m.content for m in server.library.store.messages(sid)]
    edited = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}]
    edited += [{"role": "assistant", "content": stored[1]}, {"role": "user", "content": "q2, edited"}]
    _, fact = server.ask(edited, extra_headers=headers)
    assert (fact["action"], fact["session"]) == ("rewound", sid)
    assert [m.content for m in server.library.store.messages(sid)][:3] == ["q1", stored[1], "q2, edited"]
    assert "q3" not in server.view() and "q2, edited" in server.view()
    # What the edit cut is not lost: the saved version before it is kept as a copy.
    (copy,) = [s for s in server.library.store.list() if s.id != sid]
    assert copy.title == "my notes (before an edit)" and copy.id[:8] in fact["reason"]
    assert [m.content for m in server.library.store.messages(copy.id)] == stored
    # OpenAI's own prompt_cache_key names a conversation the same way; a regenerate stays in place.
    server.ctx.say("take two")
    reply, fact = server.ask(edited, prompt_cache_key=sid)
    assert (reply, fact["action"], fact["session"]) == ("take two", "regenerated", sid)
    assert len(server.library.store.list()) == 2, "a regenerate keeps no copy"


def test_two_interleaved_conversations_see_only_their_own_messages(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    patch_sampler(monkeypatch)
    a = ["apples?", "and pears?", "plums?", "cherries?"]
    b = ["trains?", "and boats?", "planes?", "bikes?"]

    def alone(folder: Path, questions: list[str]) -> list[str]:
        srv = FakeServer(folder)
        try:
            messages: list[dict] = [{"role": "user", "content": q} for q in questions[:0]]
            replies = []
            for q in questions:
                messages.append({"role": "user", "content": q})
                reply, _ = srv.ask(messages)
                messages.append({"role": "assistant", "content": reply})
                replies.append(reply)
            return replies
        finally:
            srv.stop()

    expected_a, expected_b = alone(tmp_path / "a", a), alone(tmp_path / "b", b)
    srv = FakeServer(tmp_path / "both")
    try:
        ma: list[dict] = []
        mb: list[dict] = []
        got_a, got_b, restored = [], [], []
        for qa, qb in zip(a, b, strict=True):
            for messages, q, got in ((ma, qa, got_a), (mb, qb, got_b)):
                messages.append({"role": "user", "content": q})
                reply, fact = srv.ask(messages)
                messages.append({"role": "assistant", "content": reply})
                got.append(reply)
                restored.append(fact["restored"])
                assert not fact["rebuilt"]
        assert got_a == expected_a and got_b == expected_b
        assert restored[2:] == ["memory"] * (len(restored) - 2), "each turn swaps the other conversation out"
        assert len(srv.library.store.list()) == 2
    finally:
        srv.stop()


def test_after_a_restart_the_snapshot_is_restored_not_the_history_read(server: FakeServer) -> None:
    messages: list[dict] = [{"role": "system", "content": "S"}]
    for q in ["q1", "q2"]:
        messages.append({"role": "user", "content": q})
        reply, fact = server.ask(messages)
        messages.append({"role": "assistant", "content": reply})
    server.restart()
    messages.append({"role": "user", "content": "q3"})
    _, fact = server.ask(messages)
    assert (fact["action"], fact["restored"], fact["rebuilt"]) == ("continued", "snapshot", False)
    assert fact["evaluated_tokens"] == len("<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n")


def test_a_session_saved_by_sinkchat_run_is_continued_over_the_api(server: FakeServer) -> None:
    from sinkchat.store import StoredMessage

    store = server.library.store
    info = store.create(model_path=str(server.model_file), system_prompt="S")
    store.add_messages(
        info.id, [StoredMessage(role="user", content="hi"), StoredMessage(role="assistant", content="yo")]
    )
    exchanges = as_exchanges(store.messages(info.id))
    messages = [{"role": "system", "content": "S"}, *exchanges, {"role": "user", "content": "next"}]
    _, fact = server.ask(messages)
    assert (fact["action"], fact["session"]) == ("continued", info.id)
    assert fact["rebuilt"] and "no snapshot" in fact["reason"]  # nothing to restore: read once, from its messages
    assert [m.content for m in store.messages(info.id)][:3] == ["hi", "yo", "next"]


def test_a_conversation_longer_than_the_cache_keeps_going(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    patch_sampler(monkeypatch)
    srv = FakeServer(tmp_path, n_ctx=400)
    try:
        system = "You are the keeper of the password heliotrope."
        facts = conversation(srv, system, [f"question number {i} with some words" for i in range(30)])
        assert all(f["n_cached"] <= 400 for f in facts)
        assert sum(f["shifts"] for f in facts) > 3 and facts[-1]["evicted_tokens"] >= 0
        assert {f["session"] for f in facts} == {facts[0]["session"]}
        assert not any(f["rebuilt"] for f in facts[1:])
        turn = len("<|im_start|>user\nquestion number 29 with some words<|im_end|>\n<|im_start|>assistant\n")
        assert max(f["evaluated_tokens"] for f in facts[1:]) <= turn, "only the new message is read, every turn"
        assert srv.view().startswith(f"<|im_start|>system\n{system}<|im_end|>\n"), "the system prompt stays pinned"
        assert "question number 29" in srv.view() and "question number 0 " not in srv.view()
    finally:
        srv.stop()


def test_a_client_that_disconnects_stops_the_reply_and_the_cache_keeps_what_was_said(server: FakeServer) -> None:
    messages = [{"role": "user", "content": "tell me everything"}]
    server.ctx.say("word " * 400)
    server.ctx.delay = 0.005
    got = []
    stream = server.client.chat.completions.create(model=MODEL, messages=messages, stream=True)
    for chunk in stream:
        got.append(chunk.choices[0].delta.content or "")
        if len(got) > 5:
            break
    stream.close()
    server.wait_idle()
    assert server.pool.served == 1
    (session,) = server.library.store.list()
    reply = server.library.store.messages(session.id)[-1]
    assert reply.finish == "cancelled" and 0 < len(reply.content) < len("word " * 400)
    assert server.view().endswith(reply.content + "<|im_end|>\n"), "the cache holds the reply as saved"
    # The client asks again: the cut reply is replaced, not read again after it.
    server.ctx.delay = 0.0
    _, fact = server.ask(
        messages + [{"role": "assistant", "content": reply.content}, {"role": "user", "content": "go"}]
    )
    assert (fact["action"], fact["session"]) == ("continued", session.id)


def test_raw_completions_see_only_their_prompt(server: FakeServer) -> None:
    import hashlib

    conversation(server, "S", ["a chat before"])
    digest = hashlib.sha256(b"Once upon").hexdigest()[:8]
    done = server.client.completions.create(model=MODEL, prompt="Once upon", max_tokens=50)
    assert done.choices[0].text == f"seen 9: {digest}" and done.choices[0].finish_reason == "stop"
    cut = server.client.completions.create(model=MODEL, prompt="Once upon", max_tokens=4)
    assert (cut.choices[0].text, cut.choices[0].finish_reason) == ("seen", "length")
    stopped = server.client.completions.create(model=MODEL, prompt="Once upon", stop=[":"])
    assert (stopped.choices[0].text, stopped.choices[0].finish_reason) == ("seen 9", "stop")
    pieces = server.client.completions.create(model=MODEL, prompt="Once upon", stream=True)
    assert "".join(c.choices[0].text for c in pieces if c.choices) == f"seen 9: {digest}"
    # The chat that was in the cache comes back from memory.
    (session,) = server.library.store.list()
    history = as_exchanges(server.library.store.messages(session.id))
    _, fact = server.ask([{"role": "system", "content": "S"}, *history, {"role": "user", "content": "again"}])
    assert (fact["action"], fact["restored"]) == ("continued", "memory")


def test_models_and_health(server: FakeServer) -> None:
    assert [m.id for m in server.client.models.list()] == [MODEL]
    assert server.client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        server.client.models.retrieve("gpt-4")
    status, health, _ = raw_request(server.url, "GET", "/health")
    assert status == 200 and health is not None
    assert health["status"] == "ok" and health["model"] == MODEL and health["busy"] is False


def test_requests_wait_in_turn_and_too_many_are_refused(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import threading

    patch_sampler(monkeypatch)
    srv = FakeServer(tmp_path, max_queue=1)
    try:
        srv.ctx.say("slow " * 60)
        srv.ctx.delay = 0.01
        results: list[str] = []

        def ask(q: str) -> None:
            results.append(srv.ask([{"role": "user", "content": q}])[0])

        first = threading.Thread(target=ask, args=("one",))
        first.start()
        while not srv.pool.busy:
            threading.Event().wait(0.005)
        second = threading.Thread(target=ask, args=("two",))
        second.start()
        while not srv.pool.queued:
            threading.Event().wait(0.005)
        with pytest.raises(openai.RateLimitError, match="1 requests are already waiting"):
            srv.ask([{"role": "user", "content": "three"}])
        first.join(10)
        second.join(10)
        assert sorted(r[:4] for r in results) == ["seen", "slow"], "both waiting requests were answered"
    finally:
        srv.stop()


def test_a_conversation_open_in_sinkchat_run_is_refused_with_409_and_then_served(server: FakeServer) -> None:
    facts = conversation(server, "S", ["q1"])
    sid = facts[0]["session"]
    conversation(server, "S", ["another chat"])  # the first one is swapped out, its lock released
    history = as_exchanges(server.library.store.messages(sid))
    messages = [{"role": "system", "content": "S"}, *history, {"role": "user", "content": "q2"}]
    elsewhere = server.library.lock(sid)  # as sinkchat run --resume would hold it
    try:
        with pytest.raises(openai.ConflictError, match="open in another"):
            server.ask(messages)
    finally:
        elsewhere.release()
    _, fact = server.ask(messages)
    assert (fact["action"], fact["session"]) == ("continued", sid)


def test_two_clients_at_once_are_served_in_turn_and_never_mix(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import threading

    from sinkchat.serve.pool import Job

    patch_sampler(monkeypatch)
    questions = {name: [f"{name} question {i}" for i in range(6)] for name in ("ann", "bob")}

    def chat(srv: FakeServer, name: str, out: dict[str, list[str]]) -> None:
        client = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x", max_retries=0)
        messages: list[dict] = [{"role": "system", "content": f"You talk to {name}."}]
        for q in questions[name]:
            messages.append({"role": "user", "content": q})
            with client.chat.completions.create(model=MODEL, messages=messages, stream=True) as stream:  # type: ignore[arg-type]
                reply = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            messages.append({"role": "assistant", "content": reply})
            out.setdefault(name, []).append(reply)

    alone: dict[str, list[str]] = {}
    with FakeServer(tmp_path / "alone") as srv:
        for name in questions:
            chat(srv, name, alone)
    together: dict[str, list[str]] = {}
    with FakeServer(tmp_path / "together") as srv:
        srv.ctx.delay = 0.001  # replies take a while, so the two clients' requests overlap
        submit = srv.pool.submit
        overlapped: list[bool] = []

        def watched(job: Job) -> None:
            overlapped.append(srv.pool.busy or srv.pool.queued > 0)
            submit(job)

        srv.pool.submit = watched  # type: ignore[method-assign]
        threads = [threading.Thread(target=chat, args=(srv, name, together)) for name in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert srv.pool.served == 12
        assert len(overlapped) == 12 and any(overlapped), "some request arrived while another was being served"
    assert together == alone


def test_exchanges_the_client_brings_are_read_once_and_saved(server: FakeServer) -> None:
    facts = conversation(server, "S", ["q1"])
    sid = facts[0]["session"]
    reply1 = server.library.store.messages(sid)[1].content
    brought = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": reply1},
        {"role": "user", "content": "u2 (from another app)"},
        {"role": "assistant", "content": "a2, written elsewhere"},
        {"role": "user", "content": "q3"},
    ]
    _, fact = server.ask(brought)
    assert (fact["action"], fact["session"], fact["rebuilt"]) == ("continued", sid, False)
    exchange = (
        "<|im_start|>user\nu2 (from another app)<|im_end|>\n<|im_start|>assistant\na2, written elsewhere<|im_end|>\n"
    )
    turn = "<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n"
    assert fact["evaluated_tokens"] == len(exchange) + len(turn), "the brought exchange and the new message only"
    assert exchange + turn in server.view()
    stored = [m.content for m in server.library.store.messages(sid)]
    assert stored[:5] == ["q1", reply1, "u2 (from another app)", "a2, written elsewhere", "q3"]
    # A named conversation takes what the client brings too; more than fits refills the cache instead.
    headers = {"X-Sinkchat-Session": sid}
    long = [
        m
        for i in range(40)
        for m in ({"role": "user", "content": f"old {i}"}, {"role": "assistant", "content": "x" * 40})
    ]
    history = as_exchanges(server.library.store.messages(sid))
    _, fact = server.ask(
        [{"role": "system", "content": "S"}, *history, *long, {"role": "user", "content": "end"}], extra_headers=headers
    )
    assert (fact["action"], fact["session"], fact["rebuilt"]) == ("continued", sid, True)
    assert "did not fit" in fact["reason"] and fact["n_cached"] <= server.n_ctx
    assert "old 39" in server.view() and "old 0<" not in server.view()
    assert len(server.library.store.messages(sid)) == len(history) + 80 + 2
