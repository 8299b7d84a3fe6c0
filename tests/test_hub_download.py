"""Downloads through the real ``huggingface_hub`` from the fake Hub: verified, cancellable, nothing half-done kept."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.errors import ModelFileError
from models.hub import HubClient, HubError
from models.hub_download import DownloadCancelled, Progress, pull
from tests.fake_hub import FakeFile, FakeHub, FakeRepo

DATA = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[FakeHub, str, Path]]:
    fake = FakeHub()
    fake.add(FakeRepo("org/Tiny-GGUF", [FakeFile("tiny-Q4_K_M.gguf", DATA), FakeFile("tiny-Q8_0.gguf", DATA * 2)]))
    fake.add(
        FakeRepo(
            "org/Split-GGUF",
            [FakeFile(f"split-Q4_0-0000{i}-of-00003.gguf", bytes([i]) * 300_000) for i in (1, 2, 3)],
        )
    )
    fake.add(FakeRepo("org/Gated-GGUF", [FakeFile("g-Q4_0.gguf", DATA)], gated="manual"))
    url = fake.start()
    yield fake, url, tmp_path / "hf-cache"
    fake.stop()


def choice(url: str, repo: str, quant: str):
    return next(c for c in HubClient(endpoint=url).files(repo) if c.quant == quant)


def gguf_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_pull_reports_progress_and_lands_in_the_hf_cache(hub) -> None:
    fake, url, cache = hub
    seen: list[Progress] = []
    path = pull(
        "org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q4_K_M"), endpoint=url, cache=cache, on_progress=seen.append
    )
    assert path.read_bytes() == DATA
    assert "models--org--Tiny-GGUF" in str(path) and "snapshots" in str(path)  # the standard cache layout
    assert seen and seen[-1].done == seen[-1].total == len(DATA) and seen[-1].fraction == 1.0
    assert all(a.done <= b.done for a, b in zip(seen, seen[1:], strict=False))
    # A second pull finds it cached: nothing is transferred again.
    before = len([r for r in fake.requests if "/resolve/" in r and not r.startswith("HEAD")])
    assert pull("org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q4_K_M"), endpoint=url, cache=cache) == path
    assert len([r for r in fake.requests if "/resolve/" in r and not r.startswith("HEAD")]) == before


def test_every_part_of_a_split_model(hub) -> None:
    _, url, cache = hub
    path = pull("org/Split-GGUF", choice(url, "org/Split-GGUF", "Q4_0"), endpoint=url, cache=cache)
    assert path.name == "split-Q4_0-00001-of-00003.gguf"
    assert sorted(p.name for p in path.parent.iterdir()) == [f"split-Q4_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


def test_corrupt_bytes_are_refused_and_removed(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, url, cache = hub
    picked = choice(url, "org/Tiny-GGUF", "Q4_K_M")  # its SHA-256 comes from the LFS metadata
    fake.repos["org/Tiny-GGUF"].files[0].data = DATA[:-1] + b"\x00"  # the server now sends other bytes
    with pytest.raises(HubError, match="is corrupt"):
        pull("org/Tiny-GGUF", picked, endpoint=url, cache=cache)
    assert not any(p.suffix == ".gguf" or len(p.name) == 64 for p in gguf_files(cache))


def test_a_dropped_connection_resumes_or_fails_clean(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.utils._http as http

    fake, url, cache = hub
    monkeypatch.setattr(http.time, "sleep", lambda s: None)
    original = FakeHub.write_body
    drops = {"left": 1}

    def flaky(self, req, f, start, end):  # noqa: ANN001
        if drops["left"] > 0:
            drops["left"] -= 1
            req.wfile.write((f.data or b"")[start : start + 1000])
            req.wfile.flush()
            req.close_connection = True
            req.connection.shutdown(2)  # the connection drops midway
            return
        original(self, req, f, start, end)

    monkeypatch.setattr(FakeHub, "write_body", flaky)
    path = pull("org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q4_K_M"), endpoint=url, cache=cache)
    assert path.read_bytes() == DATA  # resumed within the call (a Range request) and verified

    drops["left"] = 100  # now it never gets through
    with pytest.raises(HubError):
        pull("org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q8_0"), endpoint=url, cache=cache)
    assert [p.name for p in (cache / "models--org--Tiny-GGUF" / "snapshots").rglob("*.gguf")] == ["tiny-Q4_K_M.gguf"]


def test_cancel_keeps_nothing(hub) -> None:
    fake, url, cache = hub
    cancel = threading.Event()

    def stop_soon(p: Progress) -> None:
        if "00002-of" in p.part:  # the first part is complete, the second under way
            cancel.set()

    with pytest.raises(DownloadCancelled):
        pull(
            "org/Split-GGUF",
            choice(url, "org/Split-GGUF", "Q4_0"),
            endpoint=url,
            cache=cache,
            on_progress=stop_soon,
            cancel=cancel,
        )
    assert not list(cache.rglob("*.gguf"))  # the part that had completed was removed too


def test_not_enough_disk_and_gated(hub) -> None:
    _, url, cache = hub
    with pytest.raises(HubError, match="needs 1.1 MB of disk space .* has 10 B free"):
        pull(
            "org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q4_K_M"), endpoint=url, cache=cache, free_space=lambda p: 10
        )
    gated = HubClient(endpoint=url, token="hf_good_token").files("org/Gated-GGUF")[0]
    with pytest.raises(HubError, match="is gated"):
        pull("org/Gated-GGUF", gated, endpoint=url, cache=cache)
    assert pull("org/Gated-GGUF", gated, endpoint=url, token="hf_good_token", cache=cache).read_bytes() == DATA


@pytest.mark.slow
def test_search_pick_download_load_and_chat(smollm2_path: Path, tmp_path: Path) -> None:
    from models.fit import Hardware, estimate, fit, recommend
    from sinkchat.chat import Chat

    fake = FakeHub()
    fake.add(
        FakeRepo(
            "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
            [FakeFile("SmolLM2-135M-Instruct.Q4_1.gguf", source=smollm2_path), FakeFile("README.md", b"card")],
            downloads=1000,
        )
    )
    url = fake.start()
    try:
        client = HubClient(endpoint=url)
        (found,) = client.search("smollm2")
        choices = [c for c in client.files(found.repo_id) if c.kind == "model"]
        fits = [fit(estimate(c.size, 2048, quant=c.quant).total, Hardware(ram_available=8 * 10**9)) for c in choices]
        picked = choices[recommend([c.quant for c in choices], [c.size for c in choices], fits)]
        path = pull(found.repo_id, picked, endpoint=url, cache=tmp_path / "hf")
        with Chat.load(path, n_ctx=512, sampling={"temperature": 0}) as chat:
            reply = "".join(chat.send("What is the capital of France?", max_tokens=24))
        assert "Paris" in reply
    finally:
        fake.stop()


def test_the_local_library_lists_and_deletes_hub_downloads(hub, smollm2_path: Path, tmp_path: Path) -> None:
    import shutil

    from models.local_models import delete_model, scan_local_models

    fake, url, cache = hub
    fake.add(FakeRepo("org/Smol-GGUF", [FakeFile("SmolLM2-135M-Instruct.Q4_1.gguf", source=smollm2_path)]))
    pull("org/Smol-GGUF", choice(url, "org/Smol-GGUF", "Q4_1"), endpoint=url, cache=cache)
    pull("org/Split-GGUF", choice(url, "org/Split-GGUF", "Q4_0"), endpoint=url, cache=cache)
    folder = tmp_path / "my-models"
    folder.mkdir()
    shutil.copy(smollm2_path, folder / "copy.gguf")
    (folder / "mmproj-x.gguf").write_bytes(b"GGUF")

    library = scan_local_models(embedded=smollm2_path, folders=[folder], hub_cache=cache)
    by_source = {(m.source, m.repo_id, m.name) for m in library}
    assert ("embedded", None, smollm2_path.stem) in by_source
    assert ("models folder", None, "copy") in by_source
    assert ("hub cache", "org/Smol-GGUF", smollm2_path.stem) in by_source
    split = next(m for m in library if m.repo_id == "org/Split-GGUF")
    assert split.size_bytes == 900_000 and not split.usable  # three parts; not a real GGUF, so its problem is named
    smol = next(m for m in library if m.repo_id == "org/Smol-GGUF")
    assert smol.usable and smol.has_chat_template and smol.shift == "yes" and smol.quantization == "Q4_1"
    assert 130e6 < (smol.parameters or 0) < 140e6 and smol.context_length == 8192

    removed = delete_model(split)
    assert len(removed) == 6  # three snapshot links and three blobs
    assert not any(m.repo_id == "org/Split-GGUF" for m in scan_local_models(hub_cache=cache))
    with pytest.raises(ModelFileError, match="pip uninstall"):
        delete_model(next(m for m in library if m.source == "embedded"))


def test_the_models_command(hub, smollm2_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess
    import sys

    fake, url, cache = hub
    fake.add(FakeRepo("org/Smol-GGUF", [FakeFile("SmolLM2-135M-Instruct.Q4_1.gguf", source=smollm2_path)]))
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)

    def sinkchat(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sinkchat", "models", *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=120,
        )

    found = sinkchat("search", "gguf")
    assert found.returncode == 0, found.stderr
    assert "org/Tiny-GGUF" in found.stdout and "org/Gated-GGUF" in found.stdout and "gated" in found.stdout
    files = sinkchat("files", "org/Tiny-GGUF")
    assert files.returncode == 0, files.stderr
    assert "★ Q4_K_M" in files.stdout and "fits" in files.stdout  # the preselected quant
    pulled = sinkchat("pull", "org/Smol-GGUF:q4_1")
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and "100%" in pulled.stderr
    listed = sinkchat("list")
    assert "org/Smol-GGUF" in listed.stdout and "shift yes" in listed.stdout
    removed = sinkchat("rm", "SmolLM2-135M-Instruct.Q4_1", "--yes")
    assert removed.returncode == 2 and "names 2 models" in removed.stderr  # the embedded one has that name too
    path = pulled.stdout.strip()
    assert sinkchat("rm", path, "--yes").returncode == 0
    assert "org/Smol-GGUF" not in sinkchat("list").stdout

    for args, extra, message in [
        (("pull", "org/Tiny-GGUF:Q3_K_S"), {}, "has no Q3_K_S file; it has Q4_K_M, Q8_0"),
        (("files", "org/Gated-GGUF"), {}, "is gated"),
        (("files", "nobody/nothing"), {}, "was not found on the Hub"),
        (("search", "llama"), {"HF_HUB_OFFLINE": "1"}, "offline mode is on"),
    ]:
        failed = sinkchat(*args, **extra)
        assert failed.returncode == 2 and message in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
