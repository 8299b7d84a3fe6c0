"""Output into a pipe whose reader stops early (``| head -1``): no traceback, status 0 or 141.

Each command runs under a real shell with its stdout piped into ``head``.  The outputs are
made larger than a pipe's buffer, so the command is still writing when ``head`` exits and
the write fails with EPIPE: the case users meet with long listings.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

BIG = 400_000
"""Bytes of output: several times a pipe's buffer (64 KiB on Linux)."""


@pytest.fixture(autouse=True)
def settings_file(isolated_settings: Path) -> Path:
    """An empty settings file where ``SINKCHAT_CONFIG`` points: a file named there must exist."""
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.touch()
    return isolated_settings


def piped(
    tmp_path: Path, *args: str, reader: str = "head -1", stdin: str = "", timeout: float = 180
) -> tuple[int, str, str]:
    """``sinkchat ARGS | READER`` in a shell; sinkchat's exit status, what the reader printed, sinkchat's stderr."""
    folder = tmp_path / f"pipe-{len(list(tmp_path.glob('pipe-*')))}"
    folder.mkdir()
    (folder / "in").write_text(stdin, encoding="utf-8")
    command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "sinkchat", *args))
    script = f"{command} <in 2>err | {reader} >out; echo ${{PIPESTATUS[0]}} >rc"
    subprocess.run(["bash", "-c", script], cwd=folder, timeout=timeout, check=True, env=os.environ.copy())
    rc = int((folder / "rc").read_text())
    return rc, (folder / "out").read_text(encoding="utf-8"), (folder / "err").read_text(encoding="utf-8")


def assert_quiet(rc: int, err: str) -> None:
    assert err == "", err  # no traceback, no "Exception ignored ... BrokenPipeError" at exit
    assert rc in (0, 141), rc


def test_sessions_commands_into_head(tmp_path: Path) -> None:
    from sinkchat.settings import load_settings
    from sinkchat.store import SessionStore

    store = SessionStore(load_settings().sessions_dir())
    for i in range(600):  # lines of about 270 characters (titles are cut at 200): 160 KB
        store.create(model_path="/models/tiny.gguf", title=f"chat {i} " + "about the sea " * 20)
    sid = store.create(model_path="/models/tiny.gguf").id
    _, reply = store.begin_exchange(sid, "Tell me everything.")
    store.finish(reply, "All of it. " * (BIG // 10), "length")
    store.close()
    for args in (
        ("sessions", "list"),
        ("sessions", "show", sid[:8]),
        ("sessions", "export", sid[:8]),
        ("sessions", "export", sid[:8], "--format", "json"),
    ):
        rc, out, err = piped(tmp_path, *args)
        assert_quiet(rc, err)
        assert out.count("\n") == 1, (args, out[:200])
    rc, out, err = piped(tmp_path, "sessions", "list", reader="true")  # a reader that reads nothing
    assert_quiet(rc, err)


def test_models_list_into_head(tmp_path: Path, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_gguf_meta import write_gguf

    folder = tmp_path / "models"
    folder.mkdir()
    data = write_gguf(tmp_path / "one.gguf", "llama").read_bytes()
    for i in range(BIG // 300):  # names are shown up to 200 characters
        (folder / f"{i:04d}-{'x' * 190}.gguf").write_bytes(data)
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text(f"[model]\ndir = {str(folder)!r}\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    rc, out, err = piped(tmp_path, "models", "list")
    assert_quiet(rc, err)
    assert out.count("\n") == 1


def test_config_show_into_head(isolated_settings: Path, tmp_path: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text(f"[chat]\nsystem_prompt = '{'x' * BIG}'\n", encoding="utf-8")
    rc, out, err = piped(tmp_path, "config", "show")
    assert_quiet(rc, err)
    assert out == "{\n"


@pytest.mark.parametrize(
    "args",
    [
        ("config", "path"),
        ("config", "show"),
        ("models", "templates"),
        ("sessions", "list"),
        ("--help",),
        ("--version",),
    ],
)
def test_short_output_into_a_reader_that_is_gone(tmp_path: Path, args: tuple[str, ...]) -> None:
    """``head -c 0`` exits before sinkchat writes anything: even a one-line output fails, quietly."""
    from tests.test_cli import saved_session

    saved_session()
    rc, out, err = piped(tmp_path, *args, reader="head -c 0")
    assert_quiet(rc, err)
    assert out == ""


@pytest.mark.slow
def test_a_plain_chat_into_head(tmp_path: Path) -> None:
    """The reader goes away between replies: the chat ends quietly and the session stays usable."""
    questions = "".join(f"Tell me fact number {i} about the ocean.\n" for i in range(4))
    args = ("run", "--plain", "-c", "512", "--max-tokens", "40", "--seed", "1")
    rc, out, err = piped(tmp_path, *args, stdin=questions)
    assert_quiet(rc, err)
    assert out.count("\n") == 1 and out.strip()
    listed = subprocess.run(
        [sys.executable, "-m", "sinkchat", "sessions", "list"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and listed.stderr == "" and len(listed.stdout.splitlines()) == 1
