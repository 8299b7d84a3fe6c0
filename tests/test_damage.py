"""Fault injection: damaged databases, logs and folders, bad bytes in and out; no model needed.

Each case damages the files the way a disk, a crash or a hand does, then checks what a
user sees: no traceback, one clear line, and every message still readable is listed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sinkchat.locks import SessionLock
from sinkchat.session import SessionLibrary
from sinkchat.store import DB_NAME, SessionSettings, SessionStore
from sinkchat.store.wal import inspect

ROOT = Path(__file__).resolve().parent.parent


def sinkchat(*args: str, data: Path, stdin: str | bytes = "", wrap: list[str] | None = None, **kw):
    """Run the CLI with ``data`` as its data dir (``wrap``: a command that confines it)."""
    env = {**os.environ, "SINKCHAT_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
    command = [*(wrap or []), sys.executable, "-m", "sinkchat", *args]
    raw = stdin if isinstance(stdin, bytes) else stdin.encode()
    out = subprocess.run(command, input=raw, capture_output=True, timeout=300, env=env, cwd=ROOT, **kw)
    return out.returncode, out.stdout.decode("utf-8", "replace"), out.stderr.decode("utf-8", "replace")


def fill(store: SessionStore, n_sessions: int = 3, n_exchanges: int = 3) -> list[str]:
    ids = []
    for s in range(n_sessions):
        info = store.create(model_path="/m/model.gguf", settings=SessionSettings(n_ctx=512))
        for e in range(n_exchanges):
            _, reply = store.begin_exchange(info.id, f"question {e} of session {s}")
            store.finish(reply, f"answer {e} of session {s} " + "words " * 20, "eos")
        ids.append(info.id)
    return ids


def no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


# -- bad bytes in the database -------------------------------------------------------------


def test_invalid_utf8_in_one_session_hides_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "sessions"
    store = SessionStore(folder)
    bad, good, third = fill(store)
    store.close()
    db = sqlite3.connect(folder / DB_NAME)
    db.execute("UPDATE sessions SET title = CAST(X'4F6EC328' AS TEXT) WHERE id = ?", (bad,))
    db.execute("UPDATE sessions SET settings = CAST(X'7B22ff7D' AS TEXT) WHERE id = ?", (third,))
    db.execute("UPDATE messages SET content = CAST(X'6361666520E9' AS TEXT) WHERE session_id = ? AND seq = 1", (good,))
    db.commit()
    db.close()

    store = SessionStore(folder)
    listed = {s.id: s for s in store.list()}
    assert set(listed) == {bad, good, third}
    assert listed[bad].title == "On\ufffd(" and listed[bad].damaged_text
    assert listed[third].damaged_text and not listed[good].damaged_text
    messages = store.messages(good)
    assert len(messages) == 6 and messages[0].content == "cafe \ufffd" and messages[0].damaged_text
    store.close()

    code, out, err = sinkchat("sessions", "list", data=tmp_path / "data")
    assert code == 0 and len(out.splitlines()) == 3, err
    no_traceback(err)
    assert bad[:8] in err and "not UTF-8" in err and err.count("\n") == 1
    code, out, err = sinkchat("sessions", "show", good[:8], data=tmp_path / "data")
    assert code == 0 and "cafe \ufffd" in out and "answer 2 of session 1" in out
    no_traceback(err)


def test_text_that_sqlite_cannot_encode_is_stored_replaced(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    info = store.create(title="t\udce9")
    _, reply = store.begin_exchange(info.id, "caf\udce9")
    store.finish(reply, "ok \ud800", "eos")
    assert [m.content for m in store.messages(info.id)] == ["caf\ufffd", "ok \ufffd"]
    assert store.get(info.id).title == "t\ufffd"


# -- a damaged main file -----------------------------------------------------------------------


def test_salvage_rebuilds_sessions_whose_row_is_lost(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    ids = fill(store)
    store.close()
    path = tmp_path / DB_NAME
    with path.open("r+b") as f:  # dd if=/dev/zero of=sessions.db bs=4096 seek=1 count=1 conv=notrunc
        f.seek(4096)
        f.write(bytes(4096))
    probe = sqlite3.connect(path)
    assert probe.execute("SELECT count(*) FROM messages").fetchone()[0] == 18
    with pytest.raises(sqlite3.DatabaseError):
        probe.execute("SELECT * FROM sessions").fetchall()
    probe.close()

    store = SessionStore(tmp_path)
    assert store.recovery is not None and "recovered 3 sessions and 18 messages" in store.recovery
    assert "3 sessions rebuilt from their messages" in store.recovery
    listed = {s.id: s for s in store.list()}
    assert set(listed) == set(ids)
    assert all(s.n_messages == 6 for s in listed.values())
    assert listed[ids[1]].title == "(recovered) question 0 of session 1"
    assert store.messages(ids[2])[-1].content.startswith("answer 2 of session 2")


def test_recovery_is_reported_once_on_the_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "sessions"
    store = SessionStore(folder)
    fill(store)
    store.close()
    with (folder / DB_NAME).open("r+b") as f:
        f.seek(4096)
        f.write(bytes(4096))
    code, out, err = sinkchat("sessions", "list", data=tmp_path / "data")
    assert code == 0 and len(out.splitlines()) == 3
    no_traceback(err)
    assert err.count("recovered") == 1 and "stopped reading" not in err and len(err.splitlines()) == 1


# -- a damaged write-ahead log ------------------------------------------------------------------

WRITER = """
import os, sys
from sinkchat.store import SessionStore
store = SessionStore(__import__("pathlib").Path(sys.argv[1]))
info = store.create(model_path="/m/model.gguf")
for e in range(4):
    _, reply = store.begin_exchange(info.id, f"question {e}")
    store.checkpoint(reply, f"answer {e} so")
    store.finish(reply, f"answer {e} complete", "eos")
if sys.argv[2] == "mid-reply":
    _, reply = store.begin_exchange(info.id, "question 4")
    for i in range(3):
        store.checkpoint(reply, "answer 4 so far" + " more" * i)
os._exit(0)  # as kill -9 would: no close, the log and its index stay behind
"""


def damage(wal: Path, how: str) -> None:
    data = bytearray(wal.read_bytes())
    page = int.from_bytes(data[8:12], "big")
    frames = (len(data) - 32) // (24 + page)
    if how == "truncated":
        data = data[: 32 + (frames - 1) * (24 + page) + 100]
    elif how == "header-zeroed":
        data[:32] = bytes(32)
    elif how == "random-bytes":
        data = bytearray(random.Random(7).randbytes(len(data)))
    elif how == "flip-middle":
        data[32 + (frames // 2) * (24 + page) + 24 + 50] ^= 0x40
    elif how == "flip-last":
        data[32 + (frames - 1) * (24 + page) + 24 + 50] ^= 0x40
    wal.write_bytes(bytes(data))


DAMAGE = ["truncated", "header-zeroed", "random-bytes", "flip-middle", "flip-last"]


def killed_writer(folder: Path, when: str) -> Path:
    subprocess.run([sys.executable, "-c", WRITER, str(folder), when], check=True, cwd=ROOT, timeout=60)
    wal = folder / f"{DB_NAME}-wal"
    assert wal.stat().st_size > 32 and (folder / f"{DB_NAME}-shm").is_file()
    return wal


def test_a_finished_reply_leaves_nothing_in_the_log_to_damage(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path), "between-replies"], check=True, cwd=ROOT, timeout=60)
    wal = tmp_path / f"{DB_NAME}-wal"
    assert wal.stat().st_size == 0  # checkpointed into the main file and emptied after every write
    wal.write_bytes(random.Random(3).randbytes(50_000))
    store = SessionStore(tmp_path)
    (info,) = store.list()
    messages = store.messages(info.id)
    assert [m.content for m in messages[1::2]] == [f"answer {e} complete" for e in range(4)]
    assert all(m.status == "complete" for m in messages)
    assert store.recovery is None  # nothing was lost, so nothing to alarm anyone about


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_log_that_loses_data_says_so(tmp_path: Path, how: str) -> None:
    damage(killed_writer(tmp_path, "mid-reply"), how)
    store = SessionStore(tmp_path)
    (info,) = store.list()
    messages = store.messages(info.id)
    assert [m.content for m in messages[1:8:2]] == [f"answer {e} complete" for e in range(4)]
    assert messages[8].content == "question 4"  # the question was checkpointed before the reply streamed
    assert store.recovery is not None and "write-ahead log" in store.recovery and "damaged" in store.recovery
    kept = list(tmp_path.glob(f"{DB_NAME}-wal.damaged-*"))
    assert len(kept) == 1 and str(kept[0]) in store.recovery


def test_a_sound_log_left_by_a_killed_process_is_not_called_damaged(tmp_path: Path) -> None:
    wal = killed_writer(tmp_path, "mid-reply")
    report = inspect(wal, tmp_path / f"{DB_NAME}-shm")
    assert report is not None and report.damage is None and report.valid == report.committed
    store = SessionStore(tmp_path)
    assert store.recovery is None
    (info,) = store.list()
    assert store.messages(info.id)[-1].content == "answer 4 so far more more"


def test_the_log_of_a_live_process_is_left_alone(tmp_path: Path) -> None:
    """Another process sees the owner's lock on the ``-shm`` index, so it never judges a log being written."""
    code = (
        "import sys, pathlib; from sinkchat.store.database import _in_use; "
        "print(_in_use(pathlib.Path(sys.argv[1]) / 'sessions.db-shm'))"
    )

    def seen_in_use() -> str:
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    owner = SessionStore(tmp_path)
    fill(owner, 1, 1)
    assert (tmp_path / f"{DB_NAME}-shm").is_file()
    assert seen_in_use() == "True"
    killed_writer(tmp_path / "other", "mid-reply")  # a dead owner's index: nobody holds it
    assert (
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "other")], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        == "False"
    )
    owner.close()


# -- full disk, read-only folder ---------------------------------------------------------------


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


UNSHARE = _can_unshare()


def confined(data: Path, mode: str) -> tuple[list[str], dict]:
    """A command prefix (and subprocess options) that runs sinkchat with ``data`` full or read-only.

    With user namespaces (no privileges needed): a real small tmpfs filled to the brim,
    or a read-only bind mount.  Without: the file-size limit (writes fail with EFBIG), or
    for read-only a folder without write permission (for root: root without its override).
    """
    if UNSHARE:
        if mode == "full":
            script = (
                'cp -a "$0" /tmp/sinkchat-full-src && mount -t tmpfs -o size=512k tmpfs "$0" && '
                'cp -a /tmp/sinkchat-full-src/. "$0"/ && rm -rf /tmp/sinkchat-full-src && '
                '(dd if=/dev/zero of="$0/filler" bs=4k 2>/dev/null || true) && exec "$@"'
            )
        else:
            script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        return ["unshare", "-rm", "sh", "-c", script, str(data)], {}
    if mode == "full":
        import resource

        def limit() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

        return [], {"preexec_fn": limit}
    for path in data.rglob("*"):
        path.chmod(path.stat().st_mode & ~0o222)
    data.chmod(0o555)
    if os.geteuid() != 0:
        return [], {}
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"], {}  # root, without its override


def prepared(tmp_path: Path, with_sessions: bool) -> tuple[Path, list[str]]:
    data = tmp_path / "data"
    ids = []
    if with_sessions:
        store = SessionStore(data / "sessions")
        ids = fill(store, 2, 2)
        store.close()
    else:
        data.mkdir()
    return data, ids


@pytest.mark.parametrize("mode", ["full", "read-only"])
def test_reading_works_when_nothing_can_be_written(tmp_path: Path, mode: str) -> None:
    data, ids = prepared(tmp_path, with_sessions=True)
    wrap, options = confined(data, mode)
    code, out, err = sinkchat("sessions", "list", data=data, wrap=wrap, **options)
    assert code == 0 and len(out.splitlines()) == 2, err
    no_traceback(err)
    code, out, err = sinkchat("sessions", "show", ids[0][:8], data=data, wrap=wrap, **options)
    assert code == 0 and "answer 1 of session 0" in out, err
    code, out, err = sinkchat("sessions", "export", ids[1][:8], "--format", "json", data=data, wrap=wrap, **options)
    assert code == 0 and json.loads(out)["id"] == ids[1], err
    code, out, err = sinkchat("sessions", "rm", ids[0][:8], data=data, wrap=wrap, **options)
    assert code == 2 and err.startswith("sinkchat: error: cannot delete session") and len(err.splitlines()) == 1
    no_traceback(err)
    code, out, err = sinkchat("sessions", "rename", ids[0][:8], "new", data=data, wrap=wrap, **options)
    assert code == 2 and "cannot save" in err and len(err.splitlines()) == 1
    no_traceback(err)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "read-only"])
@pytest.mark.parametrize("with_sessions", [False, True])
def test_chatting_goes_on_unsaved_when_nothing_can_be_written(tmp_path: Path, mode: str, with_sessions: bool) -> None:
    data, ids = prepared(tmp_path, with_sessions)
    wrap, options = confined(data, mode)
    args = ["run", "--plain", "--max-tokens", "4", "-c", "256", *(["--resume", ids[0][:8]] if with_sessions else [])]
    code, out, err = sinkchat(*args, data=data, stdin="Hello\nAgain\n", wrap=wrap, **options)
    assert code == 0, err
    no_traceback(err)
    assert err.count("not being saved") == 1, err
    assert len([line for line in out.splitlines() if line.strip()]) == 2  # both messages were answered


# -- locks ------------------------------------------------------------------------------------


def test_probing_a_lock_never_makes_an_owner_give_up(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    SessionLock.acquire(path).release()
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            SessionLock.is_locked(path)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        for _ in range(300):
            SessionLock.acquire(path).release()
    finally:
        stop.set()
        prober.join()


def test_a_lock_file_that_cannot_be_made_is_one_clear_line(tmp_path: Path) -> None:
    from sinkchat.locks import LockFileError

    blocker = tmp_path / "locks"
    blocker.write_text("not a folder")
    with pytest.raises(LockFileError, match="cannot lock this session: .*locks/x.lock"):
        SessionLock.acquire(blocker / "x.lock")


# -- snapshots ------------------------------------------------------------------------------


def test_temporary_snapshot_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    library = SessionLibrary(tmp_path)
    library.snapshots.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = library.snapshots / f".{'a' * 32}.kv.{dead.pid}.tmp"
    live = library.snapshots / f".{'b' * 32}.kv.{os.getpid()}.tmp"
    orphan.write_bytes(b"x" * 1000)
    live.write_bytes(b"x" * 1000)
    library.prune_snapshots()
    assert not orphan.exists() and live.exists()


# -- what reaches the terminal --------------------------------------------------------------


HOSTILE_PATH = "/m/\u001b]0;pwned\u0007\u001b[2J.gguf"


def test_stored_fields_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    data = tmp_path / "data"
    doc = {
        "format": "sinkchat.session",
        "version": 1,
        "id": "c" * 32,
        "title": "evil \u202etxt.exe " + "x" * 100_000,
        "title_custom": True,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "model_path": HOSTILE_PATH,
        "system_prompt": None,
        "messages": [{"role": "user", "content": "hi \u001b[31m"}, {"role": "assistant", "content": "ho"}],
    }
    export = tmp_path / "evil.json"
    export.write_text(json.dumps(doc))
    outputs = []
    for args in (
        ("sessions", "import", str(export)),
        ("sessions", "list"),
        ("sessions", "show", "cccc"),
        ("sessions", "rename", "cccc", "\u001b[2J", "again"),
        ("sessions", "rm", "-y", "cccc"),
    ):
        code, out, err = sinkchat(*args, data=data)
        assert code == 0, err
        outputs.append(out + err)
    for text in outputs:
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
        assert max(len(line) for line in text.splitlines()) < 400  # a 100 KB title is cut for display
    assert "<U+202E>" in outputs[1] and "␛" in outputs[1]


def test_an_error_quoting_a_hostile_path_is_inert(tmp_path: Path) -> None:
    code, _, err = sinkchat("run", "--plain", "--model", "/nope/\u001b[2J\u202e.gguf", data=tmp_path)
    assert code == 2 and "\x1b" not in err and "\u202e" not in err and "␛[2J" in err


@pytest.mark.slow
def test_invalid_utf8_on_stdin_is_replaced_and_the_chat_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    code, out, err = sinkchat("run", "--plain", "--max-tokens", "4", data=data, stdin=b"caf\xe9\nsecond line\n")
    assert code == 0, err
    no_traceback(err)
    assert len([line for line in out.splitlines() if line.strip()]) == 2  # both lines answered
    store = SessionStore(data / "sessions")
    (info,) = store.list()
    assert [m.content for m in store.messages(info.id) if m.role == "user"] == ["caf\ufffd", "second line"]
