"""End to end: the real ``sinkchat run`` in tmux, on SmolLM2, read off the screen as a person would."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


class Tmux:
    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket, self.env = socket, env

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, env=self.env, timeout=30
        )
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "chat")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; the screen shows:\n{self.screen()}")


def shifts(screen: str) -> int:
    match = re.search(r"(\d+) shifts? · (\d+) evicted", screen)
    assert match, screen
    return int(match.group(1))


def send(tmux: Tmux, text: str) -> str:
    tmux("send-keys", "-t", "chat", "-l", text)
    tmux("send-keys", "-t", "chat", "Enter")
    deadline = time.monotonic() + 5
    while "replying" not in tmux.screen() and time.monotonic() < deadline:  # it may finish before we look
        time.sleep(0.05)
    return tmux.wait_for(lambda s: "replying" not in s and "tok/s" in s, 120, "the reply to end")


def test_the_gauge_shows_shifts_rising_in_a_tiny_cache(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.fail("this test needs tmux (Debian: apt-get install tmux); .ci/run installs it")
    (tmp_path / "config.toml").touch()
    env = {**os.environ, "TERM": "xterm-256color", "SINKCHAT_CONFIG": str(tmp_path / "config.toml")}
    tmux = Tmux(f"sinkchat-e2e-{os.getpid()}", env)
    command = f"{sys.executable} -m sinkchat run --n-ctx 128 --max-tokens 60 --temperature 0"
    tmux("new-session", "-d", "-s", "chat", "-x", "120", "-y", "36", command)
    try:
        ready = tmux.wait_for(
            lambda s: re.search(r"\d+ shifts? · \d+ evicted", s) is not None, 120, "the model to load"
        )
        assert "/128" in ready and shifts(ready) == 0
        first = shifts(send(tmux, "Tell me about the sea."))
        after = send(tmux, "Now tell me about the mountains.")
        second = shifts(after)
        assert second > first, after
        assert re.search(r"(\d+)/128", after) and int(re.search(r"(\d+)/128", after).group(1)) <= 128
        assert "╭─ assistant" in after
        tmux("send-keys", "-t", "chat", "C-q")
        tmux.wait_for(lambda s: "pinned" not in s, 15, "sinkchat to quit")
    finally:
        tmux("kill-server")


def test_a_message_typed_during_a_re_read_is_sent_after_it(tmp_path: Path, smollm2_path: Path) -> None:
    """Issue 15, item 1, on the real app: F2, Ctrl+S, then at once a message."""
    from sinkchat.store import SessionStore

    if shutil.which("tmux") is None:
        pytest.fail("this test needs tmux (Debian: apt-get install tmux); .ci/run installs it")
    data = tmp_path / "data"
    store = SessionStore(data / "sessions")
    sid = store.create(model_path=str(smollm2_path)).id
    paragraph = " ".join(f"Paragraph {i} is about harbours, lighthouses, tides and weather." for i in range(30))
    for i in range(4):
        _, reply = store.begin_exchange(sid, f"Question {i}: {paragraph}")
        store.finish(reply, f"Answer {i}: {paragraph}", "eos")
    store.close()
    (tmp_path / "config.toml").touch()
    env = {
        **os.environ,
        "TERM": "xterm-256color",
        "SINKCHAT_CONFIG": str(tmp_path / "config.toml"),
        "SINKCHAT_DATA_DIR": str(data),
    }
    tmux = Tmux(f"sinkchat-e2e-busy-{os.getpid()}", env)
    command = f"{sys.executable} -m sinkchat run --resume --n-ctx 2048 --max-tokens 20 --temperature 0"
    tmux("new-session", "-d", "-s", "chat", "-x", "120", "-y", "36", command)
    try:
        tmux.wait_for(lambda s: re.search(r"\d+ shifts? · \d+ evicted", s) is not None, 300, "the session to load")
        tmux("send-keys", "-t", "chat", "F2")
        tmux.wait_for(lambda s: "System prompt" in s or "system prompt" in s, 15, "the system prompt dialog")
        tmux("send-keys", "-t", "chat", "-l", "You are a cat.")
        tmux("send-keys", "-t", "chat", "C-s")
        tmux.wait_for(lambda s: "re-reading the history" in s, 15, "the busy state")  # the dialog has closed
        tmux("send-keys", "-t", "chat", "-l", "Who are you?")
        tmux("send-keys", "-t", "chat", "Enter")
        busy = tmux.wait_for(lambda s: "Wait: re-reading" in s or "message waits" in s, 15, "the message to wait")
        assert "still" not in busy, busy

        def answered(screen: str) -> bool:  # a bubble with a reply under it, not the text still in the box
            last = screen.split("╭─ you")[-1]
            return "Who are you?" in last and "╭─ assistant" in last and "replying" not in screen

        done = tmux.wait_for(lambda s: answered(s) and "re-reading" not in s, 120, "the waiting message to be answered")
        assert "error" not in done.split("Who are you?")[-1], done
        tmux("send-keys", "-t", "chat", "C-q")
        tmux.wait_for(lambda s: "pinned" not in s, 15, "sinkchat to quit")
    finally:
        tmux("kill-server")
    shown = subprocess.run(
        [sys.executable, "-m", "sinkchat", "sessions", "show", sid[:8]], capture_output=True, text=True, env=env
    )
    assert shown.stdout.count("Who are you?") == 1, shown.stdout
    assert shown.stdout.rstrip().split("## ")[-2].startswith("User\n\nWho are you?")
