"""Reading GGUF metadata without loading the model, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import ModelFileError, UnsupportedModelError
from models.gguf_meta import read_gguf


def write_gguf(path: Path, arch: str) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny")
    writer.add_context_length(64)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_reads_the_embedded_model_without_loading_it(smollm2_path: Path) -> None:
    info = read_gguf(smollm2_path)
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert info.metadata["tokenizer.ggml.tokens"] == {"array_len": 49152}
    assert 130e6 < info.n_params < 140e6


def test_small_written_file_round_trips(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "tiny.gguf", "llama"))
    assert (info.architecture, info.name, info.context_length, info.n_tensors) == ("llama", "tiny", 64, 1)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "not found"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_text("hello, I am text " * 10), p)[1], "not a GGUF"),
        (lambda p: (p.write_bytes(b"GGUF\x07\x00\x00\x00" + b"\x00" * 32), p)[1], "version 7"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        read_gguf(make(tmp_path / "model.gguf"))


@pytest.mark.parametrize("keep", [100, 2_000_000, 90_000_000])
def test_truncated_copies_are_named_as_such(smollm2_path: Path, tmp_path: Path, keep: int) -> None:
    broken = tmp_path / "cut.gguf"
    with smollm2_path.open("rb") as src:
        broken.write_bytes(src.read(keep))
    with pytest.raises(ModelFileError, match="truncated"):
        read_gguf(broken)


@pytest.mark.slow
def test_unknown_architecture_is_unsupported_not_a_crash(tmp_path: Path) -> None:
    from models.llama_model import LlamaModel

    with pytest.raises(UnsupportedModelError, match="does not support the architecture 'notarealarch'"):
        LlamaModel(write_gguf(tmp_path / "odd.gguf", "notarealarch"))


def finishes(call, seconds: float = 10):  # noqa: ANN001, ANN201
    """``call()``'s result, or a failure (not a hung test) when it blocks."""
    import threading

    out: dict = {}

    def run() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "it blocked: a FIFO was opened"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_fifo_is_refused_without_being_opened(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ModelFileError, match=r"is not a regular file \(a FIFO\)"):
        finishes(lambda: read_gguf(fifo))
    link = tmp_path / "link.gguf"
    link.symlink_to(fifo)
    with pytest.raises(ModelFileError, match=r"is not a regular file \(a FIFO\)"):
        finishes(lambda: read_gguf(link))
    with pytest.raises(ModelFileError, match=r"is not a regular file \(a character device\)"):
        finishes(lambda: read_gguf("/dev/zero"))


def test_a_fifo_among_the_parts_of_a_split_model_is_refused_before_llama_cpp_opens_it(tmp_path: Path) -> None:
    import os

    from models.llama_model import LlamaModel

    first = write_gguf(tmp_path / "big-00001-of-00002.gguf", "llama")
    os.mkfifo(tmp_path / "big-00002-of-00002.gguf")
    with pytest.raises(ModelFileError, match=r"big-00002-of-00002\.gguf is not a regular file \(a FIFO\)"):
        finishes(lambda: LlamaModel(first))
