"""``sinkchat`` killed with SIGKILL mid-chat, at several points, then resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sinkchat.settings import DATA_ENV
from sinkchat.store import SessionStore, StoredMessage

pytestmark = pytest.mark.slow

LONG_PASTE = "Here is a long document to summarise. " + " ".join(
    f"Paragraph {i}: the committee discussed budgets, harbours, lighthouses and the weather at length."
    for i in range(150)
)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sinkchat", "run", "--plain", "-c", "512", "--seed", "3", "--max-tokens", "400", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def say(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text.replace("\n", " ") + "\n")
    proc.stdin.flush()


def messages() -> list[StoredMessage]:
    store = SessionStore(Path(os.environ[DATA_ENV]) / "sessions")
    try:
        sessions = store.list()
        return store.messages(sessions[0].id) if sessions else []
    finally:
        store.close()


def wait_for(proc: subprocess.Popen[str], what: str, done: Callable[[list[StoredMessage]], bool]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if done(messages()):
            return
        if proc.poll() is not None:
            raise AssertionError(f"sinkchat exited before {what}: {proc.communicate()[1]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_killed_at_several_points_then_resumed() -> None:
    questions = [
        "Say hello.",
        "Write a very long story about a dragon and a knight.",
        "Write a long poem about the sea.",
        LONG_PASTE,
        "Say goodbye.",
    ]
    # 1. A reply completes; the next is killed while it streams.
    proc = start()
    say(proc, questions[0])
    wait_for(proc, "the first reply", lambda m: len(m) == 2 and m[1].status == "complete")
    say(proc, questions[1])
    wait_for(proc, "40 characters of the story", lambda m: len(m) == 4 and len(m[3].content) >= 40)
    kill(proc)
    saved_story = messages()[3].content

    # 2. Resumed; killed as soon as the next reply has any text.
    proc = start("--resume")
    say(proc, questions[2])
    wait_for(proc, "the poem's first words", lambda m: len(m) == 6 and m[5].content)
    kill(proc)

    # 3. Resumed; killed while a long paste is still being read (the reply has not begun).
    proc = start("--resume", "last")
    say(proc, questions[3])
    wait_for(proc, "the long paste to be saved", lambda m: len(m) == 8)
    kill(proc)

    # 4. Resumed; the chat goes on normally.
    proc = start("--resume")
    say(proc, questions[4])
    assert proc.stdin is not None
    proc.stdin.close()
    proc.stdin = None
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "interrupted" in err  # the resume says what happened
    assert out.strip()  # the goodbye reply

    final = messages()
    users = [m.content for m in final if m.role == "user"]
    assert users == [q.replace("\n", " ") for q in questions]  # every message once, in order
    replies = [m for m in final if m.role == "assistant"]
    assert [m.status for m in replies] == ["complete", "interrupted", "interrupted", "interrupted", "complete"]
    assert replies[1].content == saved_story and len(saved_story) >= 40  # the checkpointed text survives
    assert replies[3].content == ""  # killed before the model had read the whole paste
    assert replies[0].content and replies[4].content
    assert len(final) == 10


DRIVER = """
import sys
from pathlib import Path
from models.default_model import default_model_path
from sinkchat.chat import Chat
from sinkchat.session import Session, SessionLibrary

mode = sys.argv[1]
# A seeded sampler and a question with a long answer: the regenerated reply reaches 9 pieces every time.
chat = Chat.load(default_model_path(), n_ctx=512, sampling={"seed": 7})
session = Session.new(chat, SessionLibrary(Path(sys.argv[2])))
for _ in session.send("Say hello, then tell me about lighthouses.", max_tokens=12):
    pass
if mode == "regenerate":
    stream = session.regenerate(max_tokens=400)
else:
    session.reset("You are terse.")
    stream = session.send("Tell a long story about a lighthouse.", max_tokens=400)
for i, _ in enumerate(stream):
    if i == 8:
        print("STREAMING", flush=True)  # the test kills us here, mid-reply
"""


@pytest.mark.parametrize("mode", ["regenerate", "reset"])
def test_killed_during_regenerate_or_after_reset(mode: str) -> None:
    folder = Path(os.environ[DATA_ENV]) / "sessions"
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, mode, str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "STREAMING", proc.stderr.read() if proc.stderr else ""
    kill(proc)

    store = SessionStore(folder)
    try:
        sessions = sorted(store.list(), key=lambda s: s.created_at)
        saved = [store.messages(s.id) for s in sessions]
    finally:
        store.close()
    if mode == "regenerate":
        (history,) = saved
        assert [m.role for m in history] == ["user", "assistant"]
        assert history[0].content == "Say hello, then tell me about lighthouses."
        assert history[1].status == "streaming"  # until the next owner marks it interrupted
    else:
        first, second = saved
        assert [m.content for m in first][:1] == ["Say hello, then tell me about lighthouses."]
        assert first[1].status == "complete"
        assert (
            second[0].content == "Tell a long story about a lighthouse."
            and sessions[1].system_prompt == "You are terse."
        )

    # resumed: the interrupted reply is said, kept, and the chat goes on
    proc = start("--resume", "last")
    out, err = proc.communicate("Say goodbye.\n", timeout=180)
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "interrupted" in err and out.strip()
    store = SessionStore(folder)
    try:
        last = store.messages(store.resolve("last"))
    finally:
        store.close()
    assert [m.status for m in last if m.role == "assistant"] == ["interrupted", "complete"]
    assert [m.content for m in last if m.role == "user"][-1] == "Say goodbye."
