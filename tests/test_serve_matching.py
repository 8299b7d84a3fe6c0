"""Recognising conversations from OpenAI requests: pure logic, no model, no server."""

from __future__ import annotations

import pytest

from sinkchat.serve.matching import ConversationIndex, Match, Turn, common_exchanges, parse_messages, prefix_keys
from sinkchat.serve.protocol import ApiError, ChatMessage, ChatRequest


def msgs(*pairs: tuple[str, object]) -> list[ChatMessage]:
    return [ChatMessage.model_validate({"role": r, "content": c}) for r, c in pairs]


def test_parse_splits_system_history_and_new_message() -> None:
    turn = parse_messages(
        msgs(
            ("system", "Be brief."), ("developer", "Use French."), ("user", "Hi"), ("assistant", "Salut"), ("user", "?")
        )
    )
    assert turn == Turn(system="Be brief.\n\nUse French.", history=(("Hi", "Salut"),), user="?")
    assert turn.messages() == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Salut"}]


def test_parse_joins_consecutive_messages_and_text_parts() -> None:
    parts = [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]
    turn = parse_messages(msgs(("user", "a"), ("user", "b"), ("assistant", "c"), ("user", parts)))
    assert turn.history == (("a\n\nb", "c"),)
    assert turn.user == "part one, part two"


def test_parse_an_assistant_greeting_first_becomes_an_empty_question() -> None:
    turn = parse_messages(msgs(("assistant", "How can I help?"), ("user", "Tell me a joke")))
    assert turn.history == (("", "How can I help?"),)


@pytest.mark.parametrize(
    ("messages", "param", "words"),
    [
        ([("user", "hi"), ("assistant", "hello")], "messages", "last message must be the user's"),
        ([("user", "hi"), ("system", "late"), ("user", "x")], "messages.1.role", "only supported at the start"),
        ([("user", "hi"), ("tool", "42")], "messages.1", "tool"),
        ([("user", [{"type": "image_url", "image_url": {"url": "x"}}])], "messages.0.content.0", "images"),
        ([("system", "only a system prompt")], "messages", "last message must be the user's"),
    ],
)
def test_parse_refuses_what_it_cannot_honour(messages: list, param: str, words: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_messages(msgs(*messages))
    assert err.value.status == 400
    assert err.value.param == param
    assert words in err.value.message


def test_request_refuses_features_by_name() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    for extra, param in [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
    ]:
        with pytest.raises(ApiError) as err:
            ChatRequest.model_validate(base | extra).check()
        assert err.value.param == param and "not supported" in err.value.message
    ChatRequest.model_validate(base | {"n": 1, "unknown_new_field": {"x": 1}}).check()  # new fields are ignored


def test_keys_ignore_surrounding_whitespace_but_not_content() -> None:
    a = prefix_keys("sys", [("hi", "hello")])
    assert a == prefix_keys(" sys\n", [("hi ", "\nhello\n")])
    assert a[-1] != prefix_keys("sys", [("hi", "hello!")])[-1]
    assert a[-1] != prefix_keys("sys", [("hih", "ello")])[-1], "fields are length-prefixed"
    assert len(a) == 2 and a[0] == prefix_keys("sys", [])[0]


def index_of(**conversations: tuple[str | None, list[tuple[str, str]]]) -> ConversationIndex:
    index = ConversationIndex()
    for stamp, (sid, (system, exchanges)) in enumerate(conversations.items()):
        index.put(sid, system, exchanges, float(stamp))
    return index


def test_find_continues_regenerates_or_reads_the_rest() -> None:
    index = index_of(a=("S", [("q1", "r1"), ("q2", "r2")]), b=("S", [("x", "y")]))
    assert index.find(Turn("S", (("q1", "r1"), ("q2", "r2")), "q3")) == Match("a", "continue")
    assert index.find(Turn("S", (("q1", "r1"),), "q2")) == Match("a", "regenerate")
    assert index.find(Turn("S", (("q1", "r1"),), "other")) is None, "an edited last message is a new history"
    brought = (("x", "y"), ("u", "v"))
    assert index.find(Turn("S", brought, "w")) == Match("b", "continue", (("u", "v"),))
    assert index.find(Turn("other system", (("q1", "r1"), ("q2", "r2")), "q3")) is None
    assert index.find(Turn("S", (), "x")) is None, "a first message never regenerates another client's reply"


def test_find_prefers_the_newest_of_identical_conversations_and_follows_changes() -> None:
    index = index_of(old=("S", [("q", "r")]), new=("S", [("q", "r")]))
    assert index.find(Turn("S", (("q", "r"),), "next")) == Match("new", "continue")
    loads = []

    def load(sid: str) -> tuple[str | None, list[tuple[str, str]]]:
        loads.append(sid)
        return "S", [("q", "r"), ("next", "reply")]

    index.refresh({"old": 0.0, "new": 5.0}, load)  # "new" changed elsewhere (sinkchat run); "old" did not
    assert loads == ["new"]
    assert index.find(Turn("S", (("q", "r"),), "again")) == Match("old", "continue")
    index.refresh({"new": 5.0}, load)  # "old" was deleted
    assert "old" not in index.entries and loads == ["new"]
    index.invalidate("new")
    index.refresh({"new": 5.0}, load)
    assert loads == ["new", "new"]


def test_common_exchanges() -> None:
    assert common_exchanges([("a", "b"), ("c", "d")], [("a ", "b"), ("c", "x")]) == 1
    assert common_exchanges([], [("a", "b")]) == 0


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        (
            {"messages": [{"role": "user", "content": 12}]},
            "messages.0.content",
            "invalid value for 'messages.0.content': should be a valid string or a valid list (got 12)",
        ),
        (
            {"temperature": 9},
            "temperature",
            "invalid value for 'temperature': should be less than or equal to 2 (got 9)",
        ),
        (
            {"stop": ["a"] * 5},
            "stop",
            "invalid value for 'stop': at most 4 stop sequences (got ['a', 'a', 'a', 'a', 'a'])",
        ),
        ({"model": None}, "model", "invalid value for 'model': should be a valid string (got None)"),
    ],
)
def test_validation_errors_name_the_field_in_one_line(fields: dict, param: str, message: str) -> None:
    from pydantic import ValidationError

    from sinkchat.serve.protocol import validation_error

    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]} | fields
    with pytest.raises(ValidationError) as err:
        ChatRequest.model_validate(body)
    error = validation_error(err.value)
    assert (error.status, error.param, error.message) == (400, param, message)
