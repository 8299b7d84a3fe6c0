"""The model files the picker and ``sinkchat models list`` offer: found without loading, never waited on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.local_models import scan_local_models
from tests.test_gguf_meta import finishes, write_gguf


def test_a_fifo_in_the_models_folder_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    (folder / "nested").mkdir(parents=True)
    os.mkfifo(folder / "stuck.gguf")
    os.mkfifo(folder / "nested" / "also-stuck.gguf")
    (folder / "folder.gguf").mkdir()
    write_gguf(folder / "tiny.gguf", "llama")
    (folder / "gone.gguf").symlink_to(tmp_path / "nowhere.gguf")
    models = finishes(lambda: scan_local_models(folders=[folder]))
    assert [m.name for m in models] == ["gone", "tiny"]
    assert models[1].usable and models[1].architecture == "llama"
    assert not models[0].usable and "not found" in (models[0].problem or "")  # a broken link says so


def test_a_fifo_given_by_name_is_listed_with_its_problem(tmp_path: Path) -> None:
    fifo = tmp_path / "given.gguf"
    os.mkfifo(fifo)
    (model,) = finishes(lambda: scan_local_models(given=[(fifo, "command line")]))
    assert not model.usable and model.size_bytes == 0
    assert model.problem == f"{fifo} is not a regular file (a FIFO); a model is a GGUF file"


def test_a_fifo_in_the_hub_cache_is_skipped(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--org--Repo-GGUF" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--Repo-GGUF" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--Repo-GGUF" / "refs" / "main").write_text("abc123")
    os.mkfifo(snapshot / "stuck.gguf")
    write_gguf(snapshot / "tiny.gguf", "llama")
    models = finishes(lambda: scan_local_models(hub_cache=tmp_path / "hub"))
    assert [m.name for m in models] == ["tiny"]


def test_a_model_that_cannot_be_removed_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from models.errors import ModelFileError
    from models.local_models import LocalModel, delete_model

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")

    def refuse(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "unlink", refuse)
    model = LocalModel(path=path, size_bytes=4, source="models folder")
    with pytest.raises(ModelFileError, match=f"cannot remove {path}: Read-only file system"):
        delete_model(model)
