"""The Hub catalogue: the real ``huggingface_hub`` client against a local fake Hub on 127.0.0.1."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.hub import HubClient, HubError, iter_pages
from models.hub_files import HubFile, group_gguf, kind_of, parse_quant
from tests.fake_hub import FakeFile, FakeHub, FakeRepo


@pytest.fixture
def hub() -> Iterator[tuple[FakeHub, str]]:
    fake = FakeHub(page_size=2)
    fake.add(
        FakeRepo(
            "bartowski/Llama-3.2-1B-Instruct-GGUF",
            [
                FakeFile("README.md", b"# card"),
                FakeFile("Llama-3.2-1B-Instruct-Q4_K_M.gguf", b"q" * 300),
                FakeFile("Llama-3.2-1B-Instruct-Q8_0.gguf", b"e" * 500),
                FakeFile("Llama-3.2-1B-Instruct-IQ4_XS.gguf", b"i" * 250),
            ],
            downloads=90_000,
            likes=120,
            gguf={"architecture": "llama", "total": 1_235_814_432, "context_length": 131072},
        )
    )
    fake.add(
        FakeRepo(
            "unsloth/Big-GGUF",
            [FakeFile(f"Q2_K/Big-Q2_K-0000{i}-of-00003.gguf", b"b" * 40) for i in (3, 1, 2)]
            + [FakeFile("mmproj-Big-F16.gguf", b"m" * 7), FakeFile("imatrix.gguf", b"x")],
            downloads=5_000,
            last_modified="2026-11-20T08:00:00.000Z",
        )
    )
    fake.add(FakeRepo("meta-llama/Gated-GGUF", [FakeFile("g-Q4_0.gguf", b"g")], downloads=70_000, gated="manual"))
    fake.add(FakeRepo("someone/safetensors-only", [FakeFile("model.safetensors", b"s")], downloads=10**6))
    url = fake.start()
    yield fake, url
    fake.stop()


def test_search_finds_gguf_repositories_by_downloads(hub) -> None:
    fake, url = hub
    results = HubClient(endpoint=url).search(limit=10)
    assert [r.repo_id for r in results] == [
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "meta-llama/Gated-GGUF",
        "unsloth/Big-GGUF",
    ]  # the safetensors-only repository is not a GGUF one
    top = results[0]
    assert (top.downloads, top.likes, top.architecture, top.parameters) == (90_000, 120, "llama", 1_235_814_432)
    assert results[1].gated == "manual"
    assert any("filter=gguf" in r for r in fake.requests)
    assert len([r for r in fake.requests if r.startswith("/api/models?filter")]) == 2  # followed the Link header


def test_search_by_query_sort_and_pages(hub) -> None:
    _, url = hub
    client = HubClient(endpoint=url)
    assert [r.repo_id for r in client.search("llama")] == [
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "meta-llama/Gated-GGUF",
    ]
    assert client.search(sort="last_modified", limit=1)[0].repo_id == "unsloth/Big-GGUF"
    pages = list(iter_pages(client, "", page=2))
    assert [len(p) for p in pages] == [2, 1]
    assert client.search("no such model") == []


def test_files_are_grouped_for_picking(hub) -> None:
    _, url = hub
    choices = HubClient(endpoint=url).files("unsloth/Big-GGUF")
    assert [(c.name, c.kind, c.quant) for c in choices] == [
        ("Big-Q2_K", "model", "Q2_K"),
        ("mmproj-Big-F16", "mmproj", "F16"),
        ("imatrix", "imatrix", None),
    ]
    big = choices[0]
    assert [p.path for p in big.parts] == [f"Q2_K/Big-Q2_K-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert big.size == 120 and big.complete and big.first.endswith("00001-of-00003.gguf")


def test_files_carry_size_and_sha256(hub) -> None:
    import hashlib

    _, url = hub
    choices = HubClient(endpoint=url).files("bartowski/Llama-3.2-1B-Instruct-GGUF")
    assert [c.quant for c in choices] == ["IQ4_XS", "Q4_K_M", "Q8_0"]  # smallest first; the README is not a choice
    q4 = choices[1]
    assert q4.size == 300 and q4.parts[0].sha256 == hashlib.sha256(b"q" * 300).hexdigest()


def test_gated_missing_and_unreachable_are_clear(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url = hub
    with pytest.raises(HubError, match="is gated: accept its terms on the Hub, then set HF_TOKEN"):
        HubClient(endpoint=url).files("meta-llama/Gated-GGUF")
    with pytest.raises(HubError, match="is gated"):
        HubClient(endpoint=url, token="hf_wrong").files("meta-llama/Gated-GGUF")
    assert HubClient(endpoint=url, token=fake.token).files("meta-llama/Gated-GGUF")[0].quant == "Q4_0"
    with pytest.raises(HubError, match="nobody/nothing was not found on the Hub"):
        HubClient(endpoint=url).files("nobody/nothing")
    fake.stop()
    import huggingface_hub.utils._http as http

    waits: list[float] = []
    monkeypatch.setattr(http.time, "sleep", waits.append)  # the library would retry with backoff: 23 s in all
    with pytest.raises(HubError, match="the Hub cannot be reached"):
        HubClient(endpoint=url).search("llama")
    assert not waits  # said at once: the probe does not wait for the library's 23 s of retries
    fake.start()  # the fixture stops it again


def test_offline_mode_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="offline mode is on"):
        HubClient(endpoint="http://127.0.0.1:9").search("llama")


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full in /cache: 2.0 GB needed"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "the disk quota is used up in /cache: 2.0 GB needed"),
        (OSError(errno.EFBIG, "File too large"), "a file-size limit (ulimit -f, or the file system's own) stopped"),
        (PermissionError(errno.EACCES, "Permission denied", "/cache/.locks/x.lock"), "permission denied on /cache/.l"),
        (OSError(errno.EROFS, "Read-only file system"), "the file system is read-only on /cache; set HF_HUB_CACHE"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "the Hub cannot be reached"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "the Hub cannot be reached"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "the Hub cannot be reached"),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), "the Hub cannot be reached"),
        (OSError("Consistency check failed: file should be of size 10"), "the Hub cannot be reached"),
    ],
)
def test_this_machines_errors_are_not_the_networks(error: OSError, said: str) -> None:
    from models.hub import _errors

    explained = _errors("download x.gguf from org/X", "org/X", folder=Path("/cache"), need=2 * 10**9).explain(error)
    assert explained.startswith(f"cannot download x.gguf from org/X: {said}"), explained


@pytest.mark.parametrize(
    ("name", "quant"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
        ("Mistral-7B-Instruct-v0.3.IQ4_XS.gguf", "IQ4_XS"),
        ("phi-3-mini-4k-instruct-fp16.gguf", "F16"),
        ("gemma-2-2b-it-bf16.gguf", "BF16"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("model-Q8_0.gguf", "Q8_0"),
        ("Q5_K_S/model-Q5_K_S.gguf", "Q5_K_S"),
        ("DeepSeek-R1-UD-IQ1_S.gguf", "IQ1_S"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model.gguf", None),
        ("Q4_K_M/model.gguf", None),  # only the file name counts
    ],
)
def test_parse_quant(name: str, quant: str | None) -> None:
    assert parse_quant(name) == quant


def test_kinds_and_incomplete_splits() -> None:
    assert kind_of("mmproj-model-f16.gguf") == "mmproj"
    assert kind_of("imatrix.gguf") == "imatrix"
    assert kind_of("README.md") == "other"
    (choice,) = group_gguf([HubFile(path="m-Q4_0-00001-of-00002.gguf", size=1)])
    assert not choice.complete  # a part is missing from the repository


# -- An unreachable Hub: one clear line, at once -------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", [("files", "org/Some-GGUF"), ("pull", "org/Some-GGUF"), ("search", "llama")])
def test_an_unreachable_hub_is_said_in_one_line_at_once(args: tuple[str, ...], tmp_path: Path) -> None:
    """huggingface_hub retried the refused connection for 23 s, with 22 log lines, before the sentence."""
    import os
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "HF_HUB_CACHE": str(tmp_path / "hf")}
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_VERBOSITY"):
        env.pop(name, None)
    started = time.monotonic()
    failed = subprocess.run(
        [sys.executable, "-m", "sinkchat", "models", *args], capture_output=True, text=True, env=env, timeout=120
    )
    elapsed = time.monotonic() - started
    assert failed.returncode == 2 and not failed.stdout
    assert len(failed.stderr.splitlines()) == 1, failed.stderr
    assert "the Hub cannot be reached (connection refused); check the network" in failed.stderr
    assert elapsed < 12, elapsed  # before: 24 s of retries


def test_a_hub_that_does_not_answer_the_connection_is_unreachable_within_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener whose backlog is full drops new connections, as a black-holed network does."""
    import threading
    import time

    import models.hub

    monkeypatch.setattr(models.hub, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler.connect(server.getsockname())  # the one place in the backlog; nobody accepts
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        said: list[BaseException] = []

        def list_files() -> None:
            try:
                HubClient(endpoint=url).files("org/Some-GGUF")
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                said.append(exc)

        started = time.monotonic()
        worker = threading.Thread(target=list_files, daemon=True)  # without a limit it would wait for ever
        worker.start()
        worker.join(10)
        elapsed = time.monotonic() - started
    assert said and isinstance(said[0], HubError), said
    assert "the Hub cannot be reached (no connection within 0.5 s)" in str(said[0])
    assert elapsed < 8, elapsed  # without a connect limit it waits for ever


def test_the_library_writes_no_log_lines_of_its_own(hub) -> None:
    import logging

    _, url = hub
    HubClient(endpoint=url)
    library = logging.getLogger("huggingface_hub")
    assert not [h for h in library.handlers if type(h) is logging.StreamHandler]  # its records go to the app's log
    assert library.propagate


def test_files_lists_the_files_that_are_not_models_set_apart(hub, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    _, url = hub
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_CACHE": str(tmp_path / "hf")}
    env.pop("HF_TOKEN", None)
    listed = subprocess.run(
        [sys.executable, "-m", "sinkchat", "models", "files", "unsloth/Big-GGUF"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert "Big-Q2_K (3 parts)" in lines[1]
    assert lines[2].split() == ["F16", "7", "B", "vision", "projector,", "not", "a", "chat", "model:", "mmproj-Big-F16"]
    assert lines[3].endswith("importance matrix, not a chat model: imatrix")
