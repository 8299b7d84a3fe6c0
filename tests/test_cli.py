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
def test_a_base_model_says_so_in_one_line_and_continues_text(gemma_path: Path) -> None:
    args = ("run", "--plain", "-m", str(gemma_path), "-c", "1024", "--temperature", "0", "--max-tokens", "12")
    result = sinkchat(*args, stdin="The capital of France is\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("\n") == 1 and "no chat template: it looks like a base model" in result.stderr
    assert result.stdout.strip() and "<start_of_turn>" not in result.stdout and "<|im_" not in result.stdout
    chatting = sinkchat(*args, "--chat-template", "gemma-3", stdin="Hello\n")
    assert chatting.returncode == 0 and "base model" not in chatting.stderr


def test_an_unknown_chat_template_is_one_clear_line() -> None:
    assert_clean_error(sinkchat("run", "--plain", "--chat-template", "no-such-one"), "no chat template named")


def test_models_templates_lists_the_shipped_templates() -> None:
    result = sinkchat("models", "templates")
    assert result.returncode == 0 and "gemma-3" in result.stdout and "llama.cpp" in result.stdout


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


# -- sinkchat sessions ---------------------------------------------------------------------


def saved_session(title_text: str = "What is the capital of France?") -> str:
    from sinkchat.settings import load_settings
    from sinkchat.store import SessionSettings, SessionStore

    store = SessionStore(load_settings().sessions_dir())
    sid = store.create(
        model_path="/models/tiny.gguf", system_prompt="Be brief.", settings=SessionSettings(n_ctx=512)
    ).id
    _, reply = store.begin_exchange(sid, title_text)
    store.finish(reply, "Paris. \x1b[31mred\x1b[0m", "eos")
    store.close()
    return sid


def test_sessions_list_show_rename_export_import_rm(tmp_path: Path) -> None:
    first = saved_session()
    second = saved_session("Tell me about \x1b]0;evil\x07 whales")

    listed = sinkchat("sessions", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(second[:8]) and lines[1].startswith(first[:8])
    assert "\x1b" not in listed.stdout and "tiny" in listed.stdout  # titles are inert text

    found = sinkchat("sessions", "list", "--search", "paris")
    assert found.stdout.count("\n") == 2  # both replies say Paris
    assert sinkchat("sessions", "list", "-s", "whales").stdout.startswith(second[:8])

    shown = sinkchat("sessions", "show", first[:6])
    assert shown.returncode == 0
    assert "## User\n\nWhat is the capital of France?" in shown.stdout
    assert "\x1b" not in shown.stdout and "␛[31mred" in shown.stdout

    renamed = sinkchat("sessions", "rename", first[:6], "Geography", "quiz")
    assert renamed.returncode == 0 and "Geography quiz" in renamed.stdout
    assert "Geography quiz" in sinkchat("sessions", "list").stdout

    export = tmp_path / "chat.json"
    assert sinkchat("sessions", "export", first[:6], "--format", "json", "-o", str(export)).returncode == 0
    md = sinkchat("sessions", "export", first[:6])
    assert md.stdout.startswith("# Geography quiz")

    removed = sinkchat("sessions", "rm", first[:6])
    assert removed.returncode == 0 and f"deleted {first[:8]}" in removed.stdout
    assert first[:8] not in sinkchat("sessions", "list").stdout

    imported = sinkchat("sessions", "import", str(export))
    assert imported.returncode == 0 and f"imported {first[:8]}" in imported.stdout
    assert "Geography quiz" in sinkchat("sessions", "list").stdout


def test_sessions_errors_are_one_line(tmp_path: Path) -> None:
    saved_session()
    assert_clean_error(sinkchat("sessions", "show", "ffff"), "no session with id ffff")
    assert_clean_error(sinkchat("sessions", "show", "zz"), "is not a session id")
    saved_session()
    assert_clean_error(sinkchat("sessions", "rm", ""), "is not a session id")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert_clean_error(sinkchat("sessions", "import", str(bad)), "not a sinkchat session export")
    assert_clean_error(sinkchat("sessions", "import", str(tmp_path / "missing.json")), "cannot read")
    assert_clean_error(sinkchat("run", "--plain", "--resume", "abcdef12"), "no session with id abcdef12")


def test_run_resume_with_no_sessions() -> None:
    assert_clean_error(sinkchat("run", "--plain", "--resume"), "there are no saved sessions yet")


@pytest.mark.slow
def test_resume_remembers_the_cache_size_and_continues() -> None:
    first = sinkchat("run", "--plain", "-c", "320", "--temperature", "0", "--max-tokens", "12", stdin="Hello!\n")
    assert first.returncode == 0, first.stderr
    again = sinkchat("run", "--plain", "--resume", "--max-tokens", "12", stdin="And again?\n")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # n_ctx 320 came from the session: the snapshot fits, nothing to report
    other = sinkchat("run", "--plain", "--resume", "-c", "256", "--max-tokens", "12", stdin="Once more?\n")
    assert other.returncode == 0, other.stderr
    assert "n_ctx 320 → 256" in other.stderr and "rebuilt the cache" in other.stderr
    listed = sinkchat("sessions", "list").stdout.splitlines()
    assert len(listed) == 1 and "6 msgs" in listed[0]


def test_a_damaged_database_is_reported_and_replaced(tmp_path: Path) -> None:
    from sinkchat.settings import load_settings

    saved_session()
    db = load_settings().sessions_dir() / "sessions.db"
    db.write_bytes(db.read_bytes()[:1000])  # cut inside the first pages
    listed = sinkchat("sessions", "list")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert "the sessions database was damaged" in listed.stderr and "damaged file is kept at" in listed.stderr
    assert sinkchat("sessions", "list").stderr in ("", "no sessions\n")  # reported once; the new one works


def one_line_error(result: subprocess.CompletedProcess[str], message: str) -> str:
    assert_clean_error(result, message)
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    return result.stderr


def test_a_huge_context_is_refused_before_anything_is_allocated(smollm2_path: Path) -> None:
    """``-c 1000000`` needs 23 GB of KV cache for SmolLM2: refused in a second, not killed after 16."""
    import json
    import textwrap

    import psutil

    from models.fit import HEADROOM, check_context
    from models.gguf_meta import read_gguf
    from models.options import LoadOptions

    need = check_context(read_gguf(smollm2_path), LoadOptions(n_ctx=4096))
    assert need is not None
    n_ctx = 1_000_000  # the command; a machine that could hold it gets one 4x its memory instead
    budget = HEADROOM * psutil.virtual_memory().available
    if need.kv_cache * (n_ctx / 4096) <= budget:
        n_ctx = int(4 * budget / need.kv_cache * 4096)
    measure = textwrap.dedent(
        f"""
        import json, resource, subprocess, sys
        done = subprocess.run(
            [sys.executable, "-m", "sinkchat", "run", "--plain", "-c", "{n_ctx}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        print(json.dumps({{"rc": done.returncode, "stderr": done.stderr, "peak": peak}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    run = json.loads(out.stdout)
    result = subprocess.CompletedProcess([], run["rc"], "", run["stderr"])
    line = one_line_error(result, f"a context of {n_ctx} tokens for SmolLM2")
    assert "(KV cache " in line and "+ compute buffers" in line and "available RAM" in line
    if n_ctx == 1_000_000:
        assert "needs about 23.1 GB (KV cache 23.0 GB" in line
    suggested = int(line.split("choose n_ctx ")[1].split()[0])
    assert 64 <= suggested < n_ctx
    assert run["peak"] < 1 << 30, run  # the weights are mapped, the cache never allocated


def test_a_fifo_given_as_the_model_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = sinkchat("run", "--plain", "--model", str(fifo), timeout=30)
    one_line_error(result, f"{fifo} is not a regular file (a FIFO)")


def test_models_list_skips_a_fifo_in_the_models_folder(
    tmp_path: Path, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_gguf_meta import write_gguf

    folder = tmp_path / "models"
    folder.mkdir()
    os.mkfifo(folder / "stuck.gguf")
    write_gguf(folder / "real.gguf", "llama")
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text(f"[model]\ndir = {str(folder)!r}\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # only this folder and the embedded model
    result = sinkchat("models", "list", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "stuck" not in result.stdout
    assert "real " in result.stdout and "models folder" in result.stdout


def test_a_load_error_with_llama_cpp_s_reason_is_one_line(smollm2_path: Path, tmp_path: Path) -> None:
    """A damaged copy that the header check passes: llama.cpp's own complaint ends the same line."""
    import struct

    from models.gguf_meta import GGUF_MAGIC

    data = bytearray(smollm2_path.read_bytes())
    assert data[:4] == GGUF_MAGIC
    name = b"token_embd.weight"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)  # its tensor info: n_dims, then the dims
    assert struct.unpack_from("<I", data, at)[0] == 2
    cols, rows = struct.unpack_from("<QQ", data, at + 4)
    struct.pack_into("<QQ", data, at + 4, rows, cols)  # the same bytes, the wrong shape
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(data)
    line = one_line_error(sinkchat("run", "--plain", "--model", str(damaged)), "llama.cpp could not load damaged.gguf")
    assert "llama.cpp said: " in line and "wrong shape" in line and "  " not in line
