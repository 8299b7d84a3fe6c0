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
