"""The ``sinkchat`` command as a user runs it: pipes, errors without tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def sinkchat(*args: str, stdin: str = "", timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sinkchat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("sinkchat: error: ")
    assert message in result.stderr


def test_help_and_version() -> None:
    assert sinkchat("--version").stdout.startswith("sinkchat ")
    result = sinkchat("run", "--help")
    assert result.returncode == 0 and "--plain" in result.stdout and "--sink-tokens" in result.stdout


def test_missing_model(tmp_path: Path) -> None:
    assert_clean_error(sinkchat("run", "--plain", "--model", str(tmp_path / "nope.gguf")), "model file not found")


def test_not_a_gguf(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.gguf"
    bogus.write_text("just text")
    assert_clean_error(sinkchat("run", "--plain", "--model", str(bogus)), "is not a GGUF model file")


def test_truncated_gguf(smollm2_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "half.gguf"
    with smollm2_path.open("rb") as src:
        broken.write_bytes(src.read(40_000_000))
    assert_clean_error(sinkchat("run", "--plain", "--model", str(broken)), "is truncated")


def test_bad_settings_are_named() -> None:
    assert_clean_error(sinkchat("run", "--plain", "--cache-type-k", "q3"), "type_k")
    assert_clean_error(sinkchat("run", "--plain", "--temperature", "-1"), "temperature")


@pytest.mark.slow
def test_context_smaller_than_the_pins() -> None:
    system = "You are a helpful assistant who answers briefly. " * 4
    assert_clean_error(sinkchat("run", "--plain", "--n-ctx", "64", "--system", system), "n_ctx of at least")
    assert_clean_error(
        sinkchat("run", "--plain", "--n-ctx", "40"), "n_ctx: Input should be greater than or equal to 64"
    )


@pytest.mark.slow
def test_piped_chat_prints_replies_only() -> None:
    result = sinkchat(
        "run",
        "--plain",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        stdin="What is the capital of France?\nAnd of Italy?\n",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) >= 2
    assert "Paris" in result.stdout
    assert result.stderr == ""


@pytest.mark.slow
def test_piped_chat_in_a_tiny_cache_keeps_going() -> None:
    questions = "".join(f"Tell me fact number {i} about the ocean.\n" for i in range(6))
    result = sinkchat("run", "--plain", "--n-ctx", "128", "--max-tokens", "60", "--seed", "1", stdin=questions)
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()]) >= 6


@pytest.mark.slow
def test_ctrl_c_stops_the_reply_and_the_chat_goes_on() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sinkchat", "run", "--plain", "--max-tokens", "0", "--seed", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write("Write a very long story about a dragon and a knight.\n")
    proc.stdin.flush()
    assert proc.stdout.read(20)  # the reply is streaming
    proc.send_signal(signal.SIGINT)
    proc.stdin.write("Say hello.\n")
    proc.stdin.close()
    proc.stdin = None  # already closed: communicate() must not flush it again
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "[stopped]" in err and "Traceback" not in err
    assert len([line for line in out.splitlines() if line.strip()]) >= 2
