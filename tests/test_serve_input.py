"""Bad and hostile requests to ``sinkchat serve``: each gets its status and an OpenAI error body, and the
server goes on serving (fake model, fast)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from sinkchat.serve.app import Limits
from tests.serve_harness import MODEL, FakeServer, patch_sampler, raw_request

LIMITS = Limits(max_body_bytes=1 << 20, max_messages=1000, max_tokens=4096, default_max_tokens=100)
OK_MESSAGES = [{"role": "user", "content": "hello"}]


def body(**fields: object) -> bytes:
    return json.dumps({"model": MODEL, "messages": OK_MESSAGES, **fields}).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    mp = pytest.MonkeyPatch()
    patch_sampler(mp)
    srv = FakeServer(tmp_path_factory.mktemp("serve"), limits=LIMITS, api_key="s3cret-key")
    yield srv
    srv.stop()
    mp.undo()


AUTH = {"Authorization": "Bearer s3cret-key"}
CHAT = "/v1/chat/completions"

CASES = [
    # (name, method, path, body, headers, status, code, words in the message)
    ("broken json", "POST", CHAT, b'{"model": "fake-chat", "messages": [', AUTH, 400, "invalid_json", "not valid JSON"),
    ("not an object", "POST", CHAT, b"[1, 2, 3]", AUTH, 400, "invalid_json", "must be a JSON object"),
    ("empty body", "POST", CHAT, b"", AUTH, 400, "invalid_json", "no body"),
    ("invalid utf-8", "POST", CHAT, b'{"model": "\xff\xfe"}', AUTH, 400, "invalid_json", "not valid JSON"),
    ("deep nesting", "POST", CHAT, b"[" * 200_000 + b"]" * 200_000, AUTH, 400, "invalid_json", "nested too deeply"),
    ("missing messages", "POST", CHAT, json.dumps({"model": MODEL}).encode(), AUTH, 400, "missing", "'messages'"),
    ("missing model", "POST", CHAT, json.dumps({"messages": OK_MESSAGES}).encode(), AUTH, 400, "missing", "'model'"),
    ("messages not a list", "POST", CHAT, body(messages="hi"), AUTH, 400, "invalid_value", "'messages'"),
    ("no messages", "POST", CHAT, body(messages=[]), AUTH, 400, "invalid_value", "at least one"),
    (
        "unknown role",
        "POST",
        CHAT,
        body(messages=[{"role": "wizard", "content": "x"}]),
        AUTH,
        400,
        "invalid_value",
        "messages.0.role",
    ),
    (
        "content a number",
        "POST",
        CHAT,
        body(messages=[{"role": "user", "content": 12}]),
        AUTH,
        400,
        "invalid_value",
        "messages.0.content",
    ),
    ("temperature a string", "POST", CHAT, body(temperature="hot"), AUTH, 400, "invalid_value", "'temperature'"),
    ("temperature too high", "POST", CHAT, body(temperature=9), AUTH, 400, "invalid_value", "'temperature'"),
    ("max_tokens -1", "POST", CHAT, body(max_tokens=-1), AUTH, 400, "invalid_value", "'max_tokens'"),
    (
        "max_tokens over the cap",
        "POST",
        CHAT,
        body(max_tokens=10**9),
        AUTH,
        400,
        "max_tokens_too_large",
        "limit of 4096",
    ),
    ("seed a float", "POST", CHAT, body(seed=1.5), AUTH, 400, "invalid_value", "'seed'"),
    ("stream a string", "POST", CHAT, body(stream="yes"), AUTH, 400, "invalid_value", "'stream'"),
    ("five stop strings", "POST", CHAT, body(stop=list("abcde")), AUTH, 400, "invalid_value", "at most 4"),
    ("n = 3", "POST", CHAT, body(n=3), AUTH, 400, "unsupported", "n > 1"),
    (
        "tools",
        "POST",
        CHAT,
        body(tools=[{"type": "function", "function": {"name": "f"}}]),
        AUTH,
        400,
        "unsupported",
        "tools",
    ),
    (
        "an image",
        "POST",
        CHAT,
        body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]),
        AUTH,
        400,
        "unsupported",
        "images",
    ),
    (
        "ends with a reply",
        "POST",
        CHAT,
        body(messages=[*OK_MESSAGES, {"role": "assistant", "content": "hi"}]),
        AUTH,
        400,
        "invalid_value",
        "last message",
    ),
    (
        "unknown model",
        "POST",
        CHAT,
        json.dumps({"model": "gpt-4o", "messages": OK_MESSAGES}).encode(),
        AUTH,
        404,
        "model_not_found",
        "does not exist",
    ),
    ("no key", "POST", CHAT, body(), {}, 401, "invalid_api_key", "missing API key"),
    ("wrong key", "POST", CHAT, body(), {"Authorization": "Bearer s3cret-kez"}, 401, "invalid_api_key", "incorrect"),
    (
        "wrong scheme",
        "POST",
        CHAT,
        body(),
        {"Authorization": "Basic s3cret-key"},
        401,
        "invalid_api_key",
        "missing API key",
    ),
    (
        "huge body",
        "POST",
        CHAT,
        body(messages=[{"role": "user", "content": "x" * (2 << 20)}]),
        AUTH,
        413,
        "body_too_large",
        "1048576 bytes",
    ),
    (
        "10k messages",
        "POST",
        CHAT,
        body(messages=[{"role": "user", "content": "x"}] * 10_000),
        AUTH,
        413,
        "too_many_messages",
        "10000",
    ),
    ("GET a POST endpoint", "GET", CHAT, None, AUTH, 405, "method_not_allowed", "GET is not allowed"),
    ("no such endpoint", "POST", "/v1/embeddings", body(), AUTH, 404, "not_found", "/v1/embeddings"),
    (
        "completion n=2",
        "POST",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": "x", "n": 2}).encode(),
        AUTH,
        400,
        "unsupported",
        "n > 1",
    ),
    (
        "completion prompt a number",
        "POST",
        "/v1/completions",
        json.dumps({"model": MODEL, "prompt": 7}).encode(),
        AUTH,
        400,
        "invalid_value",
        "'prompt",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_a_clear_error_and_the_server_goes_on(server: FakeServer, case: tuple) -> None:
    _, method, path, data, headers, status, code, words = case
    got, error, _ = raw_request(server.url, method, path, data, headers)
    assert got == status, error
    assert error is not None and set(error) == {"error"}
    assert error["error"]["code"] == code and words in error["error"]["message"], error
    assert "Traceback" not in error["error"]["message"]
    assert len(error["error"]["message"]) < 300
    # ... and the next ordinary request is answered.
    ok, reply, _ = raw_request(server.url, "POST", CHAT, body(), AUTH)
    assert ok == 200 and reply is not None and reply["choices"][0]["message"]["content"].startswith("seen ")


def test_unicode_garbage_is_answered_and_saved_readably(server: FakeServer) -> None:
    text = "nul\\u0000 lone \\ud800 surrogate, bidi \\u202e override, emoji \\ud83d\\ude00, bell \\u0007"
    data = ('{"model": "' + MODEL + '", "messages": [{"role": "user", "content": "' + text + '"}]}').encode()
    status, reply, headers = raw_request(server.url, "POST", CHAT, data, AUTH)
    assert status == 200 and reply is not None
    session = headers["x-sinkchat-session"]
    saved = server.library.store.messages(session)[0].content
    assert saved == "nul\x00 lone \ufffd surrogate, bidi \u202e override, emoji \U0001f600, bell \x07"


def test_the_openai_client_raises_its_own_exception_types(server: FakeServer) -> None:
    good = openai.OpenAI(base_url=f"{server.url}/v1", api_key="s3cret-key", max_retries=0)
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="incorrect API key"):
        bad.chat.completions.create(model=MODEL, messages=OK_MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        good.chat.completions.create(model="gpt-4o", messages=OK_MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="n > 1"):
        good.chat.completions.create(model=MODEL, messages=OK_MESSAGES, n=2)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        good.chat.completions.create(model=MODEL, messages=OK_MESSAGES, max_tokens=-1)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as too_many:
        good.chat.completions.create(model=MODEL, messages=OK_MESSAGES * 1001)  # type: ignore[arg-type]
    assert too_many.value.status_code == 413
    with pytest.raises(openai.BadRequestError, match="not supported"):
        stream = good.chat.completions.create(
            model=MODEL, messages=OK_MESSAGES, stream=True, tools=[{"type": "function", "function": {"name": "f"}}]
        )  # type: ignore[arg-type]
        list(stream)
    reply = good.chat.completions.create(model=MODEL, messages=OK_MESSAGES)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
