"""The sessions database on a temporary data dir: no model needed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sinkchat.export import ExportError, from_json
from sinkchat.locks import SessionLock, SessionLockedError
from sinkchat.session import SessionLibrary
from sinkchat.store import DB_NAME, SessionSettings, SessionStore, StoredMessage, StoreError, schema, title_from


def chat_in(store: SessionStore, *pairs: tuple[str, str], **kw) -> str:
    info = store.create(model_path="/models/m.gguf", settings=SessionSettings(n_ctx=512), **kw)
    for question, answer in pairs:
        _, reply = store.begin_exchange(info.id, question)
        store.finish(reply, answer, "eos")
    return info.id


def test_save_list_rename_rm(tmp_path: Path) -> None:
    library = SessionLibrary(tmp_path)
    store = library.store
    first = chat_in(store, ("What is the capital of France?", "Paris."))
    second = chat_in(store, ("Tell me about whales", "Whales are mammals."), ("And dolphins?", "Also mammals."))
    listed = store.list()
    assert [s.id for s in listed] == [second, first]  # most recently used first
    assert listed[0].n_messages == 4 and listed[1].n_messages == 2
    assert listed[1].title == "What is the capital of France?"  # derived from the first message
    assert listed[1].model_name == "m" and listed[1].settings.n_ctx == 512

    store.rename(first, "  Geography   quiz ")
    assert store.get(first).title == "Geography quiz"
    _, reply = store.begin_exchange(first, "Another question")
    store.finish(reply, "ok", "eos")
    assert store.get(first).title == "Geography quiz"  # a custom title is never replaced
    assert store.list()[0].id == first

    library.delete(second)
    assert [s.id for s in store.list()] == [first]
    with pytest.raises(StoreError, match="no session"):
        store.get(second)
    with pytest.raises(StoreError, match="cannot be empty"):
        store.rename(first, "   ")


def test_ids_resolve_by_unique_prefix_and_last(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    a = store.create(session_id="abc1" + "0" * 28).id
    b = store.create(session_id="abc2" + "0" * 28).id
    assert store.resolve("abc1") == a
    assert store.resolve(b.upper()[:6]) == b
    assert store.resolve("last") == b
    with pytest.raises(StoreError, match="matches several sessions"):
        store.resolve("abc")
    with pytest.raises(StoreError, match="no session with id"):
        store.resolve("ffff")
    with pytest.raises(StoreError, match="not a session id"):
        store.resolve("../../etc")


def test_search_matches_titles_and_message_text(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    whales = chat_in(store, ("Tell me about whales", "Blue whales eat krill."))
    chat_in(store, ("Capital of France?", "Paris, 100% sure."))
    assert [s.id for s in store.list(search="krill")] == [whales]
    assert [s.id for s in store.list(search="WHALES")] == [whales]
    assert len(store.list(search="100%")) == 1  # LIKE wildcards are literal
    assert store.list(search='"unbalanced quote') == []  # FTS syntax is never interpreted
    assert len(store.list(search="  ")) == 2


def test_search_without_the_fulltext_index(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    whales = chat_in(store, ("Tell me about whales", "Blue whales eat krill."))
    with store._tx() as db:  # a SQLite build without FTS5 makes no index
        for trigger in ("insert", "delete", "update"):
            db.execute(f"DROP TRIGGER messages_fts_{trigger}")
        db.execute("DROP TABLE messages_fts")
    assert [s.id for s in store.list(search="krill")] == [whales]
    assert store.list(search="plankton") == []


def test_streaming_reply_is_checkpointed_and_marked_interrupted(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    sid = chat_in(store)
    _, reply = store.begin_exchange(sid, "Write a long story")
    store.checkpoint(reply, "Once upon a")
    # The process dies here.  The next owner of the session finds the partial reply:
    again = SessionStore(tmp_path)
    messages = again.messages(sid)
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "Write a long story", "complete"),
        ("assistant", "Once upon a", "streaming"),
    ]
    assert again.mark_interrupted(sid) == 1
    assert again.messages(sid)[1].status == "interrupted"
    assert again.mark_interrupted(sid) == 0


def test_cancelled_question_is_dropped(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    sid = chat_in(store, ("Hi", "Hello!"))
    user, reply = store.begin_exchange(sid, "Never mind")
    store.drop_exchange(user, reply)
    assert [m.content for m in store.messages(sid)] == ["Hi", "Hello!"]


def test_title_from_first_line() -> None:
    assert title_from("\n\n  Fix   my code \nplease") == "Fix my code"
    long = title_from("word " * 40)
    assert len(long) <= 60 and long.endswith("…") and not long.endswith(" …")


def test_export_import_round_trip(tmp_path: Path) -> None:
    library = SessionLibrary(tmp_path / "a")
    store = library.store
    sid = store.create(model_path="/m.gguf", system_prompt="Be brief.", settings=SessionSettings(n_ctx=300)).id
    _, r1 = store.begin_exchange(sid, "Hi <b>there</b> [red]x[/red]")
    store.finish(r1, "Hello!\nLine two", "eos")
    _, r2 = store.begin_exchange(sid, "Story?")
    store.checkpoint(r2, "Once")
    store.mark_interrupted(sid)
    store.rename(sid, "Greetings")

    text = library.export(sid, "json")
    doc = from_json(text)
    assert doc.system_prompt == "Be brief." and doc.title == "Greetings" and doc.settings.n_ctx == 300
    assert [m.status for m in doc.messages] == ["complete", "complete", "complete", "interrupted"]

    other = SessionLibrary(tmp_path / "b")
    imported = other.import_json(text)
    assert imported.id == sid and imported.title == "Greetings" and imported.n_messages == 4
    assert [(m.role, m.content, m.status) for m in other.store.messages(sid)] == [
        (m.role, m.content, m.status) for m in store.messages(sid)
    ]
    assert other.export(sid, "json") == text  # byte for byte

    again = other.import_json(text)  # the id is taken: a copy gets a new one
    assert again.id != sid and again.n_messages == 4

    md = library.export(sid, "md")
    assert md.startswith("# Greetings\n")
    assert "## System\n\nBe brief." in md
    assert "## Assistant (interrupted)\n\nOnce" in md
    assert "Hi <b>there</b> [red]x[/red]" in md


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a sinkchat session export"),
        ('{"format": "other"}', "not a sinkchat session export"),
        (
            '{"id": "x", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",'
            ' "messages": [{"role": "assistant", "content": "hi"}]}',
            "alternate",
        ),
    ],
)
def test_import_rejects_what_is_not_an_export(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        SessionLibrary(tmp_path).import_json(text)


def test_upgrade_from_a_version_0_file(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    sqlite3.connect(path).close()  # an empty database: user_version 0
    store = SessionStore(tmp_path)
    assert store.recovery is None
    assert store.list() == []
    version = sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]
    assert version == schema.VERSION


def test_upgrade_keeps_the_data_of_an_older_schema(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    db = sqlite3.connect(path, isolation_level=None)
    schema.STEPS[0](db)  # version 1: before the search index existed
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, 'Old chat', 1.0, 2.0)", ("a" * 32,))
    db.execute(
        "INSERT INTO messages (session_id, seq, role, content, created_at) VALUES (?, 1, 'user', 'about krill', 1.0)",
        ("a" * 32,),
    )
    db.close()
    store = SessionStore(tmp_path)
    assert [m.content for m in store.messages("a" * 32)] == ["about krill"]
    assert [s.title for s in store.list(search="krill")] == ["Old chat"]  # the new index covers old rows


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute(f"PRAGMA user_version = {schema.VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer sinkchat"):
        SessionStore(tmp_path)


def test_a_truncated_database_is_moved_aside_and_salvaged(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    ids = [chat_in(store, (f"question {i} " + "x" * 3000, "answer " + "y" * 3000)) for i in range(12)]
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    path = tmp_path / DB_NAME
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)

    recovered = SessionStore(tmp_path)
    assert recovered.recovery is not None and "damaged" in recovered.recovery
    damaged = list(tmp_path.glob(f"{DB_NAME}.damaged-*"))
    assert damaged and str(damaged[0]) in recovered.recovery
    assert damaged[0].stat().st_size == size // 2  # the original bytes are kept
    sessions = recovered.list()
    assert {s.id for s in sessions} <= set(ids) and sessions  # what is readable survives
    new = chat_in(recovered, ("still works?", "yes"))
    assert recovered.get(new).n_messages == 2


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    store = SessionStore(tmp_path)
    assert store.recovery is not None and "recovered 0 sessions" in store.recovery
    assert chat_in(store, ("hi", "hello"))


def test_a_folder_that_cannot_be_made_reads_empty_and_refuses_writes_with_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SessionStore(blocker / "sessions")
    assert store.unwritable is not None and "Not a directory" in store.unwritable
    assert store.list() == []
    with pytest.raises(StoreError, match="cannot save: .*Not a directory"):
        store.create()


def test_one_owner_per_session(tmp_path: Path) -> None:
    library = SessionLibrary(tmp_path)
    sid = chat_in(library.store, ("hi", "hello"))
    lock = library.lock(sid)
    assert library.is_open(sid)
    with pytest.raises(SessionLockedError, match=f"open in another sinkchat \\(process {os.getpid()}\\)"):
        library.lock(sid)
    with pytest.raises(SessionLockedError):
        library.delete(sid)
    lock.release()
    assert not library.is_open(sid)
    library.lock(sid).release()


def test_a_killed_owner_leaves_no_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.lock"
    code = (
        "import pathlib, sys, time\n"
        "from sinkchat.locks import SessionLock\n"
        "lock = SessionLock.acquire(pathlib.Path(sys.argv[1]))\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "locked"
        with pytest.raises(SessionLockedError, match=f"process {owner.pid}"):
            SessionLock.acquire(path)
    finally:
        owner.kill()
        owner.wait()
    SessionLock.acquire(path).release()


def test_add_messages_keeps_order(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    sid = store.create().id
    store.add_messages(sid, [StoredMessage(role="user", content="a"), StoredMessage(role="assistant", content="b")])
    store.add_messages(sid, [StoredMessage(role="user", content="c"), StoredMessage(role="assistant", content="d")])
    assert [m.content for m in store.messages(sid)] == ["a", "b", "c", "d"]


def test_gaps_in_a_salvaged_history_become_empty_turns() -> None:
    from sinkchat.session import as_exchanges

    def msg(role: str, text: str) -> StoredMessage:
        return StoredMessage(role=role, content=text)  # type: ignore[arg-type]

    history = [msg("user", "a"), msg("user", "b"), msg("assistant", "B"), msg("assistant", "C"), msg("user", "d")]
    assert as_exchanges(history) == [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "B"},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "C"},
        {"role": "user", "content": "d"},
        {"role": "assistant", "content": ""},
    ]


def test_snapshots_are_bounded_in_number_and_bytes(tmp_path: Path) -> None:
    import time

    library = SessionLibrary(tmp_path, max_snapshots=3, max_snapshot_bytes=2500)
    ids = []
    for i in range(5):
        ids.append(chat_in(library.store, (f"q{i}", f"a{i}")))
        library.snapshot_path(ids[-1]).parent.mkdir(exist_ok=True)
        library.snapshot_path(ids[-1]).write_bytes(b"x" * 1000)
        time.sleep(0.01)  # distinct "last used" times
    orphan = library.snapshots / ("f" * 32 + ".kv")
    orphan.write_bytes(b"x")
    stale = library.snapshots / ".abc.kv.123.tmp"
    stale.write_bytes(b"x")
    os.utime(stale, (0, 0))
    fresh_tmp = library.snapshots / f".def.kv.{os.getpid()}.tmp"  # a live writer may be busy with it
    fresh_tmp.write_bytes(b"x")

    removed = library.prune_snapshots(keep=ids[0])
    left = sorted(p.name for p in library.snapshots.iterdir())
    # The open session stays; then the most recent ones while 3 files and 2500 bytes allow.
    assert left == sorted([f"{ids[0]}.kv", f"{ids[4]}.kv", fresh_tmp.name])
    assert removed == 5  # ids 1-3, the orphan, the stale temporary file
