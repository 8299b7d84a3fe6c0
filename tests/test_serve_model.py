"""``sinkchat serve`` on real weights (slow): SmolLM2 through the official OpenAI client and the ``llm`` CLI,
Gemma 3 270M as a second architecture, and sessions shared with ``sinkchat run``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_harness import ModelServer

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant. The password is heliotrope."
QUESTIONS = [
    "What is the capital of France?",
    "Name a fruit that is red.",
    "How many legs does a spider have?",
    "Write one sentence about the sea.",
    "What colour is the sky on a clear day?",
    "Give me a word that rhymes with cat.",
    "What do bees make?",
    "Name a planet in our solar system.",
]


def turn_tokens(srv: ModelServer, question: str) -> int:
    """Tokens of a user turn and the reply's opening, as the template writes them."""
    text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return len(srv.chat.model.tokenize(text, parse_special=True))


def test_a_hundred_turns_in_512_tokens_never_read_the_history_again(tmp_path: Path, smollm2_path: Path) -> None:
    srv = ModelServer(tmp_path, smollm2_path, n_ctx=512)
    try:
        messages: list[dict] = [{"role": "system", "content": SYSTEM}]
        facts = []
        pinned_text = None
        for turn in range(100):
            if turn == 50:
                srv.restart()  # the server stops in the middle of the conversation and comes back
            question = QUESTIONS[turn % len(QUESTIONS)]
            messages.append({"role": "user", "content": question})
            reply, fact = srv.ask(messages, max_tokens=40, temperature=0)
            messages.append({"role": "assistant", "content": reply})
            facts.append(fact)
            assert fact["n_cached"] <= 512
            if turn:
                assert fact["evaluated_tokens"] <= turn_tokens(srv, question) + 1, (turn, fact)
            pinned = srv.cache_text(0, fact["n_pinned"])
            pinned_text = pinned_text or pinned
            assert pinned == pinned_text and SYSTEM in pinned, "the system prompt stays pinned"
        assert len({f["session"] for f in facts}) == 1
        assert [f["action"] for f in facts] == ["new"] + ["continued"] * 99
        assert not any(f["rebuilt"] for f in facts)
        assert facts[50]["restored"] == "snapshot", "after the restart the snapshot is loaded"
        assert sum(f["shifts"] for f in facts) >= 10 and facts[-1]["prompt_tokens"] > 300
        # The client sent ever longer histories; the server read about the same few tokens each turn.
        assert facts[-1]["reused_tokens"] > 10 * facts[-1]["evaluated_tokens"]
        stored = srv.library.store.messages(facts[0]["session"])
        assert len(stored) == 200 and all(m.status == "complete" for m in stored)
    finally:
        srv.stop()


def alone_and_interleaved(folder: Path, model: Path, a: list[str], b: list[str]) -> tuple[list[str], list[str]]:
    """Each conversation alone, then both turn by turn, each from a client of its own."""
    import openai

    def run(srv: ModelServer, plan: list[tuple[list[dict], str]]) -> list[str]:
        clients: dict[int, openai.OpenAI] = {}
        out = []
        for messages, q in plan:
            client = clients.setdefault(id(messages), openai.OpenAI(base_url=f"{srv.url}/v1", api_key="x"))
            messages.append({"role": "user", "content": q})
            response = client.chat.completions.create(
                model=srv.model_id,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=32,
                temperature=0,
            )
            assert not (response.model_extra or {})["sinkchat"]["rebuilt"]
            reply = response.choices[0].message.content or ""
            messages.append({"role": "assistant", "content": reply})
            out.append(reply)
        return out

    with ModelServer(folder / "alone", model, n_ctx=1024) as srv:
        ma: list[dict] = []
        mb: list[dict] = []
        alone = run(srv, [(ma, q) for q in a]) + run(srv, [(mb, q) for q in b])
    with ModelServer(folder / "both", model, n_ctx=1024) as srv:
        ma, mb = [], []
        both = run(srv, [pair for qa, qb in zip(a, b, strict=True) for pair in ((ma, qa), (mb, qb))])
    return alone, both[0::2] + both[1::2]


def test_two_interleaved_conversations_reply_as_each_alone(tmp_path: Path, smollm2_path: Path) -> None:
    a = ["Tell me about apples.", "And pears?", "Which is sweeter?"]
    b = ["What is a train?", "How fast can it go?", "Who invented it?"]
    alone, interleaved = alone_and_interleaved(tmp_path, smollm2_path, a, b)
    assert interleaved == alone


def test_the_llm_cli_chats_through_serve(tmp_path: Path, smollm2_path: Path) -> None:
    llm = shutil.which("llm", path=str(Path(sys.executable).parent)) or shutil.which("llm")
    assert llm is not None, "the llm CLI comes with the starter extra"
    with ModelServer(tmp_path / "srv", smollm2_path, n_ctx=1024) as srv:
        home = tmp_path / "llm"
        home.mkdir()
        (home / "extra-openai-models.yaml").write_text(
            f"- model_id: sinkchat-test\n  model_name: {srv.model_id}\n  api_base: {srv.url}/v1\n"
            f"- model_id: sinkchat-raw\n  model_name: {srv.model_id}\n  api_base: {srv.url}/v1\n  completion: true\n"
        )
        env = {**os.environ, "LLM_USER_PATH": str(home)}

        def call(*args: str) -> str:
            done = subprocess.run([llm, *args], env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            return done.stdout.strip()

        first = call("-m", "sinkchat-test", "-o", "temperature", "0", "-o", "max_tokens", "30", "Name a colour.")
        second = call("-c", "-o", "temperature", "0", "-o", "max_tokens", "30", "Name another one.")
        assert first and second
        (session,) = srv.library.store.list()
        stored = srv.library.store.messages(session.id)
        assert [m.content for m in stored] == ["Name a colour.", first, "Name another one.", second]
        raw = call("-m", "sinkchat-raw", "-o", "max_tokens", "12", "The capital of France is")
        assert raw
        assert len(srv.library.store.list()) == 1, "a raw completion is not a conversation"


def test_a_conversation_moves_between_serve_and_run(tmp_path: Path, smollm2_path: Path) -> None:
    data = Path(os.environ["SINKCHAT_DATA_DIR"])  # the test's own, from conftest: run and serve share it
    with ModelServer(data, smollm2_path, n_ctx=1024) as srv:
        messages = [{"role": "user", "content": "Hi! Please remember the number 7."}]
        _, fact = srv.ask(messages, max_tokens=24)
        sid = fact["session"]
    # sinkchat run continues the API's conversation ...
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sinkchat",
            "run",
            "--plain",
            "--resume",
            sid,
            "--temperature",
            "0",
            "--max-tokens",
            "24",
        ],
        input="What number did I ask you to remember?\n",
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    with ModelServer(data, smollm2_path, n_ctx=1024) as srv:
        stored = srv.library.store.messages(sid)
        assert [m.content for m in stored][::2] == [messages[0]["content"], "What number did I ask you to remember?"]
        # ... and the API continues what sinkchat run added, from run's snapshot.
        history = [{"role": m.role, "content": m.content} for m in stored]
        _, fact = srv.ask([*history, {"role": "user", "content": "Thanks!"}], max_tokens=16)
        assert (fact["action"], fact["session"], fact["restored"], fact["rebuilt"]) == (
            "continued",
            sid,
            "snapshot",
            False,
        )


def test_gemma_serves_chat_with_a_template_and_text_without_one(tmp_path: Path, gemma_path: Path) -> None:
    import openai

    with ModelServer(tmp_path / "base", gemma_path, n_ctx=1024) as srv:
        with pytest.raises(openai.BadRequestError, match="base model"):
            srv.ask([{"role": "user", "content": "hello"}])
        text = srv.client.completions.create(model=srv.model_id, prompt="The capital of France is", max_tokens=8)
        assert text.choices[0].text.strip()
    with ModelServer(tmp_path / "chat", gemma_path, n_ctx=1024, chat_template="gemma-3") as srv:
        messages: list[dict] = [{"role": "system", "content": "Answer briefly."}]
        facts = []
        for q in ["What is two plus two?", "And three plus three?", "Name a colour."]:
            messages.append({"role": "user", "content": q})
            reply, fact = srv.ask(messages, max_tokens=24, temperature=0)
            messages.append({"role": "assistant", "content": reply})
            facts.append(fact)
        assert [f["action"] for f in facts] == ["new", "continued", "continued"]
        assert not any(f["rebuilt"] for f in facts)
        assert facts[-1]["reused_tokens"] > facts[-1]["evaluated_tokens"]


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_the_serve_command_starts_answers_and_stops_cleanly(stop: str) -> None:
    import re
    import signal

    import openai

    proc = subprocess.Popen(
        [sys.executable, "-m", "sinkchat", "serve", "--port", "0", "-c", "512", "--api-key", "k3y"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(lines)
        client = openai.OpenAI(base_url=url, api_key="k3y", max_retries=0)
        (model,) = client.models.list()
        reply = client.chat.completions.create(
            model=model.id, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
        )
        assert reply.choices[0].message.content
    finally:
        proc.send_signal(getattr(signal, stop))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped; conversations are saved" in err and "Traceback" not in err
    listing = subprocess.run([sys.executable, "-m", "sinkchat", "sessions", "list"], capture_output=True, text=True)
    assert "[api] Hi" in listing.stdout
