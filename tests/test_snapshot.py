"""Snapshot files: atomic, self-checking, refused when damaged or foreign (no model needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sinkchat.snapshot import (
    CacheState,
    Fingerprint,
    SnapshotError,
    SnapshotHeader,
    crc32,
    messages_digest,
    model_identity,
    read_header,
    read_snapshot,
    write_snapshot,
)

KV = bytes(range(256)) * 100

FP = Fingerprint(
    model="1:abc",
    n_ctx=256,
    type_k="f16",
    type_v="f16",
    flash_attn="auto",
    sink_tokens=4,
    keep_system_prompt=True,
    llama_cpp="0.3.36",
)


def header(kv: bytes = KV) -> SnapshotHeader:
    state = CacheState(
        tokens=[1, 2, 3], pin_target=4, n_pinned=3, segments=[], group=0, first_group=None, opening_len=3
    )
    return SnapshotHeader(
        fingerprint=FP, state=state, n_messages=0, messages_digest="", kv_bytes=len(kv), kv_crc32=crc32(kv)
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.kv"
    write_snapshot(path, header(), KV)
    got, kv = read_snapshot(path)
    assert kv == KV and got == header()
    assert read_header(path) == header()
    assert [p.name for p in tmp_path.iterdir()] == ["s.kv"]  # no temporary file left behind


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "s.kv"
    write_snapshot(path, header(), KV)
    newer = KV[::-1]
    write_snapshot(path, header(newer), newer)
    assert read_snapshot(path)[1] == newer


def test_a_failed_write_keeps_the_old_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.kv"
    write_snapshot(path, header(), KV)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError):
        write_snapshot(path, header(KV[:10]), KV[:10])
    assert read_snapshot(path)[1] == KV
    assert [p.name for p in tmp_path.iterdir()] == ["s.kv"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[: len(b) // 2], "checksum"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "checksum"),
        (lambda b: b[:10], "damaged"),
        (lambda b: b"NOTASNAP" + b[8:], "not a sinkchat snapshot"),
        (lambda b: b[:16] + b"[" + b[17:], "unreadable header"),
        (lambda b: b"", "too short"),
    ],
)
def test_damage_is_detected(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "s.kv"
    write_snapshot(path, header(), KV)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SnapshotError, match=message):
        read_snapshot(path)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no snapshot"):
        read_snapshot(tmp_path / "none.kv")


def test_fingerprint_differences_are_named() -> None:
    other = FP.model_copy(update={"n_ctx": 512, "model": "2:def"})
    assert FP.differences(other) == ["another model file", "n_ctx 256 → 512"]
    assert FP.differences(FP) == []


def test_model_identity_follows_content_not_name(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    data = bytes(range(256)) * 20000  # 5 MB: head and tail are both read
    a.write_bytes(data)
    b.write_bytes(data)
    c.write_bytes(data[:-1] + b"\x00")
    assert model_identity(a) == model_identity(b)
    assert model_identity(a) != model_identity(c)


def test_messages_digest_sees_every_change() -> None:
    base = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert messages_digest(base) == messages_digest([dict(m) for m in base])
    assert messages_digest(base) != messages_digest([base[0], {"role": "assistant", "content": "hello!"}])
    assert messages_digest(base) != messages_digest(base[:1])
