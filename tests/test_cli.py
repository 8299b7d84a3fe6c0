"""The ``sinkchat`` command as a user runs it: pipes, errors without tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def settings_file(isolated_settings: Path) -> Path:
    """An empty settings file where ``SINKCHAT_CONFIG`` points: a file named there must exist."""
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.touch()
    return isolated_settings


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


def on_a_terminal(*args: str, answer: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``sinkchat ARGS`` with a terminal as stdin (stdout and stderr piped), typing ``answer`` to its question."""
    import pty

    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sinkchat", *args],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        os.close(secondary)
        os.write(main, answer.encode())
        out, err = proc.communicate(timeout=timeout)
    finally:
        os.close(main)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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

    removed = sinkchat("sessions", "rm", "-y", first[:6])
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


# -- issue 15: rm asks, imports once, bare sinkchat chats, --no-save, the GPU notice ------------


def session_ids() -> list[str]:
    from sinkchat.settings import load_settings
    from sinkchat.store import SessionStore

    store = SessionStore(load_settings().sessions_dir())
    try:
        return [info.id for info in store.list()]
    finally:
        store.close()


def test_sessions_rm_asks_and_refuses_without_a_terminal() -> None:
    sid = saved_session()
    refused = sinkchat("sessions", "rm", sid[:8])
    one_line_error(refused, "there is no terminal to ask on: pass -y to delete without a question")
    assert session_ids() == [sid]
    kept = on_a_terminal("sessions", "rm", sid[:8], answer="n\n")
    assert kept.returncode == 1 and f"delete session {sid[:8]} What is the capital of France?? [y/N]" in kept.stderr
    assert "kept" in kept.stderr and kept.stdout == "" and session_ids() == [sid]
    deleted = on_a_terminal("sessions", "rm", sid[:8], answer="y\n")
    assert deleted.returncode == 0 and f"deleted {sid[:8]}" in deleted.stdout, deleted.stderr
    assert session_ids() == []
    other = saved_session()
    assert sinkchat("sessions", "rm", "--yes", other[:8]).returncode == 0 and session_ids() == []


def test_models_rm_asks_the_same_way(tmp_path: Path, isolated_settings: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_gguf_meta import write_gguf

    folder = tmp_path / "models"
    folder.mkdir()
    model = write_gguf(folder / "tiny-model.gguf", "llama")
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text(f"[model]\ndir = {str(folder)!r}\n", encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    refused = sinkchat("models", "rm", "tiny-model")
    one_line_error(refused, "there is no terminal to ask on: pass -y to delete without a question")
    kept = on_a_terminal("models", "rm", "tiny-model", answer="n\n")
    assert kept.returncode == 1 and "delete tiny-model (" in kept.stderr and "[y/N]" in kept.stderr
    assert model.exists()
    assert sinkchat("models", "rm", "-y", "tiny-model").returncode == 0 and not model.exists()


def test_importing_the_same_export_twice_says_where_it_is(tmp_path: Path) -> None:
    import json

    sid = saved_session()
    export = tmp_path / "chat.json"
    assert sinkchat("sessions", "export", sid[:8], "--format", "json", "-o", str(export)).returncode == 0

    again = sinkchat("sessions", "import", str(export))  # the original is here
    assert again.returncode == 0 and again.stdout.startswith(f"already imported as {sid[:8]}"), again.stderr
    assert session_ids() == [sid]

    doc = json.loads(export.read_text())
    doc["id"] = "ab" * 16
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(doc))
    again = sinkchat("sessions", "import", str(elsewhere))  # another id, the same chat
    assert again.returncode == 0 and again.stdout.startswith(f"already imported as {sid[:8]}")
    assert len(session_ids()) == 1

    copied = sinkchat("sessions", "import", "--copy", str(export))
    assert copied.returncode == 0 and copied.stdout.startswith("imported ") and len(session_ids()) == 2
    copy = next(i for i in session_ids() if i != sid)
    assert sinkchat("sessions", "rm", "-y", sid[:8], copy[:8]).returncode == 0 and session_ids() == []

    first = sinkchat("sessions", "import", str(elsewhere))
    assert first.returncode == 0 and first.stdout.startswith("imported abababab")
    second = sinkchat("sessions", "import", str(elsewhere))
    assert second.returncode == 0 and second.stdout.startswith("already imported as abababab")
    assert session_ids() == ["ab" * 16]

    doc["messages"] += [{"role": "user", "content": "And Spain?"}, {"role": "assistant", "content": "Madrid."}]
    went_on = tmp_path / "went-on.json"
    went_on.write_text(json.dumps(doc))
    more = sinkchat("sessions", "import", str(went_on))  # the chat went on after the first export: a new one
    assert more.returncode == 0 and more.stdout.startswith("imported ") and "(4 messages)" in more.stdout
    assert len(session_ids()) == 2


def test_bare_sinkchat_opens_the_chat(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sinkchat import cli

    seen = []
    monkeypatch.setattr(cli, "_run", lambda args: seen.append(args) or 0)
    assert cli.main([]) == 0
    assert len(seen) == 1 and seen[0].command == "run" and not seen[0].plain and seen[0].save
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage: sinkchat")


@pytest.mark.slow
def test_bare_sinkchat_chats_on_a_pipe() -> None:
    bare = sinkchat(stdin="Hello\n")
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout.strip() and "usage" not in bare.stdout + bare.stderr


@pytest.mark.slow
def test_no_save_writes_no_session() -> None:
    from sinkchat.settings import load_settings

    sid = saved_session()
    before = sinkchat("sessions", "list").stdout
    folder = load_settings().sessions_dir()
    files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    result = sinkchat(
        "run", "--plain", "--no-save", "--max-tokens", "8", "--temperature", "0", stdin="Hello!\nAgain?\n"
    )
    assert result.returncode == 0, result.stderr
    assert len([line for line in result.stdout.splitlines() if line.strip()]) == 2
    assert result.stderr == "sinkchat: this chat is not being saved: --no-save\n"
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files  # not a byte written
    assert sinkchat("sessions", "list").stdout == before and session_ids() == [sid]
    one_line_error(sinkchat("run", "--plain", "--no-save", "--resume"), "cannot be combined with --resume")


@pytest.mark.slow
def test_a_new_chat_of_an_unsaved_session_stays_unsaved(smollm2_path: Path, tmp_path: Path) -> None:
    from sinkchat.chat import Chat
    from sinkchat.session import Session, SessionLibrary

    library = SessionLibrary(tmp_path / "sessions")
    with Session.new(Chat.load(smollm2_path, n_ctx=256), library, save=False) as session:
        assert session.unsaved == "--no-save" and session.note == "this chat is not being saved: --no-save"
        assert "".join(session.send("Hi", max_tokens=4))
        session.reset()
        assert session.unsaved == "--no-save"
        assert "".join(session.send("Hi again", max_tokens=4))
    assert library.store.list() == []
    library.close()


@pytest.mark.slow
def test_gpu_layers_on_a_cpu_build_are_named_once(smollm2_path: Path) -> None:
    import llama_cpp

    from models.llama_model import LlamaModel

    gpu_build = bool(llama_cpp.llama_supports_gpu_offload())
    result = sinkchat("run", "--plain", "--n-gpu-layers", "5", "--max-tokens", "4", stdin="Hi\n")
    assert result.returncode == 0, result.stderr
    if gpu_build:
        assert "no GPU backend" not in result.stderr
    else:
        assert result.stderr == (
            "sinkchat: this llama.cpp build has no GPU backend, so all 30 layers run on the CPU "
            "(n_gpu_layers 5 has no effect)\n"
        )
    for asked in (None, 0):
        model = LlamaModel(smollm2_path, n_gpu_layers=asked)
        assert model.gpu_notice is None
        model.close()
    assert sinkchat("run", "--plain", "--max-tokens", "4", stdin="Hi\n").stderr == ""


@pytest.mark.slow
def test_no_save_on_a_terminal_says_so_once_and_new_chats_stay_unsaved() -> None:
    typed = "Hi\n/reset\nHello again\n/session\n\x04"
    result = on_a_terminal("run", "--plain", "--no-save", "--max-tokens", "6", "-c", "256", answer=typed, timeout=180)
    assert result.returncode == 0, result.stderr
    assert (
        result.stderr.count("not being saved") == 1 and "note: this chat is not being saved: --no-save" in result.stderr
    )
    assert "new chat (not saved)" in result.stderr and "(untitled) (not saved)" in result.stderr
    assert result.stdout.count("bot> ") == 2 and session_ids() == []


@pytest.mark.slow
def test_a_resumed_sessions_reply_limit_applies_unless_one_is_given(smollm2_path: Path, tmp_path: Path) -> None:
    from sinkchat.settings import DATA_ENV
    from sinkchat.store import SessionSettings, SessionStore

    store = SessionStore(Path(os.environ[DATA_ENV]) / "sessions")
    sid = store.create(model_path=str(smollm2_path), settings=SessionSettings(n_ctx=512, max_tokens=3)).id
    _, reply = store.begin_exchange(sid, "Hello")
    store.finish(reply, "Hi there.", "eos")
    story = "Tell me a long story about a lighthouse.\n"
    result = sinkchat("run", "--plain", "--resume", sid[:8], stdin=story)
    assert result.returncode == 0, result.stderr
    last = store.messages(sid)[-1]
    assert last.finish == "length" and len(last.content.split()) <= 3  # the session's own limit of 3 tokens
    result = sinkchat("run", "--plain", "--resume", sid[:8], "--max-tokens", "6", stdin=story)
    assert result.returncode == 0, result.stderr
    assert store.get(sid).settings.max_tokens == 6  # given on the command line: it wins, and is remembered
    store.close()


def test_serve_on_a_port_in_use_is_one_line_before_any_loading(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from sinkchat.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "/nonexistent.gguf"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sinkchat: error: cannot listen on 127.0.0.1:{port}: the port is in use (another server runs there?)"
