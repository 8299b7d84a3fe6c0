"""Downloads through the real ``huggingface_hub`` from the fake Hub: verified, cancellable, nothing half-done kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.errors import ModelFileError
from models.hub import HubClient, HubError
from models.hub_download import STALE_AFTER, DownloadCancelled, Progress, pull, sweep_partials
from models.units import human_bytes
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


# -- Stopped, killed and failed pulls: the command as a user runs it -------------------------

SLOW = bytes(8 << 20)  # trickled: 26 s in all, stopped long before


@pytest.fixture
def cli_env(hub, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a ``sinkchat models`` run against the fake Hub, with ``org/Slow-GGUF``'s Q4_0 trickling."""
    fake, url, cache = hub
    fake.add(FakeRepo("org/Slow-GGUF", [FakeFile("slow-Q4_0.gguf", SLOW), FakeFile("slow-Q8_0.gguf", DATA)]))
    original = FakeHub.write_body

    def trickle(self, req, f, start, end):  # noqa: ANN001
        if f.path != "slow-Q4_0.gguf":
            return original(self, req, f, start, end)
        for at in range(start, end + 1, 1 << 16):  # 26 s in all: it is stopped long before
            try:
                req.wfile.write(SLOW[at : min(at + (1 << 16), end + 1)])
            except OSError:
                return  # the client is gone
            time.sleep(0.2)

    monkeypatch.setattr(FakeHub, "write_body", trickle)
    env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    return env


def models_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sinkchat", "models", *args], capture_output=True, text=True, env=env, timeout=120
    )


def start_pull(env: dict[str, str], ref: str, *python: str, command: str = "-m") -> subprocess.Popen[str]:
    import sysconfig

    program = ["-m", "sinkchat"] if command == "-m" else [str(Path(sysconfig.get_path("scripts")) / "sinkchat")]
    return subprocess.Popen(
        [sys.executable, *python, *program, "models", "pull", ref],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def partials(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.incomplete"))


def wait_for_partial(cache: Path, proc: subprocess.Popen[str]) -> Path:
    """The partial blob of the download under way in ``proc``."""
    deadline = time.monotonic() + 60
    while not partials(cache):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.02)
    (partial,) = partials(cache)
    return partial


def age(path: Path) -> None:
    """As if the file had stood still for longer than a sweep waits."""
    then = time.time() - STALE_AFTER - 60
    os.utime(path, (then, then))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_or_sighup_mid_pull_keeps_nothing(cli_env: dict[str, str], hub, sig: signal.Signals) -> None:
    cache = hub[2]
    proc = start_pull(cli_env, "org/Slow-GGUF:Q4_0")
    wait_for_partial(cache, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and err.splitlines()[-1] == f"stopped by {sig.name}; nothing was kept", err
    assert not out and not partials(cache) and not list(cache.rglob("*.gguf"))


@pytest.mark.parametrize("command", ["-m", "script"])
@pytest.mark.parametrize("after", ["sinkchat.errors", "sinkchat.cli", "sinkchat.models_cli"])
def test_ctrl_c_while_the_command_starts_is_quiet(cli_env: dict[str, str], command: str, after: str) -> None:
    """Ctrl-C while sinkchat's own imports run, before ``cli.main`` can catch it (``-X importtime`` says where).

    Python's own start-up (``site``) and runpy's lookup of ``sinkchat.__main__`` come before any sinkchat code.
    """
    proc = start_pull(cli_env, "org/Tiny-GGUF:Q4_K_M", "-X", "importtime", command=command)
    assert proc.stderr
    for line in proc.stderr:
        assert line.startswith("import time:"), line
        if line.rsplit("|", 1)[-1].strip() == after:
            proc.send_signal(signal.SIGINT)
            break
    else:
        pytest.fail(f"{after} was never imported")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and not out, err


def test_the_console_script_is_the_quiet_entry_point() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["sinkchat"] == "sinkchat.__main__:main"  # which catches Ctrl-C while importing the CLI


def test_killed_pulls_are_swept_but_never_a_live_one(cli_env: dict[str, str], hub) -> None:
    cache = hub[2]
    live = start_pull(cli_env, "org/Slow-GGUF:Q4_0")
    partial = wait_for_partial(cache, live)
    age(partial)  # only its writer's lock says that it is alive
    listed = models_command(cli_env, "list")
    assert listed.returncode == 0, listed.stderr
    assert partial.exists() and live.poll() is None  # the download goes on
    live.kill()  # no handler runs: nothing can clean up
    live.communicate(timeout=60)
    with partial.open("ab") as f:
        f.write(DATA)  # what a bigger download would have written by then
    age(partial)
    left = partial.stat().st_size  # that, and the 256 KiB pieces written before the kill
    listed = models_command(cli_env, "list")
    assert listed.returncode == 0 and not partials(cache)
    assert f"removed {human_bytes(left)} of unfinished downloads left by stopped pulls" in listed.stderr

    killed = start_pull(cli_env, "org/Slow-GGUF:Q4_0")
    partial = wait_for_partial(cache, killed)
    killed.kill()
    killed.communicate(timeout=60)
    age(partial)
    pulled = models_command(cli_env, "pull", "org/Slow-GGUF:Q8_0")  # the next pull sweeps
    assert pulled.returncode == 0 and not partials(cache), pulled.stderr

    killed = start_pull(cli_env, "org/Slow-GGUF:Q4_0")
    partial = wait_for_partial(cache, killed)
    killed.kill()
    killed.communicate(timeout=60)
    age(partial)
    removed = models_command(cli_env, "rm", pulled.stdout.strip(), "--yes")  # and so does removing its model
    assert removed.returncode == 0 and not partials(cache), removed.stderr


def test_sweep_needs_a_dead_writer_and_a_file_that_stood_still(tmp_path: Path) -> None:
    from filelock import FileLock

    cache = tmp_path / "hf"
    blobs = cache / "models--org--X" / "blobs"
    blobs.mkdir(parents=True)
    (cache / ".locks" / "models--org--X").mkdir(parents=True)
    blob = blobs / ("a" * 64)
    dead = blobs / f"{'b' * 64}.incomplete"  # the name older huggingface_hub versions use
    fresh = blobs / f"{'c' * 64}.0123abcd.incomplete"
    live = blobs / f"{'d' * 64}.4567ef01.incomplete"
    for path in (blob, dead, fresh, live):
        path.write_bytes(b"x" * 10)
    for path in (blob, dead, live):
        age(path)
    writer = FileLock(cache / ".locks" / "models--org--X" / f"{'d' * 64}.lock")  # as huggingface_hub holds it
    with writer:
        assert sweep_partials(cache, "org/Other") == 0
        assert sweep_partials(cache) == 10
        assert sorted(blobs.iterdir()) == [blob, fresh, live]
    assert sweep_partials(cache, "org/X") == 10
    assert sorted(blobs.iterdir()) == [blob, fresh]


def test_a_full_disk_is_said_as_such(cli_env: dict[str, str], hub) -> None:
    cache = hub[2]
    limited = subprocess.run(  # files may grow to 256 KiB: writing the 1 MiB blob fails with EFBIG
        ["bash", "-c", 'ulimit -f 256 && exec "$@"', "bash", sys.executable, "-m", "sinkchat"]
        + ["models", "pull", "org/Tiny-GGUF:Q4_K_M"],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=120,
    )
    assert limited.returncode == 2 and "Traceback" not in limited.stderr, limited.stderr
    assert limited.stderr.splitlines()[-1] == (
        "sinkchat: error: cannot download tiny-Q4_K_M.gguf from org/Tiny-GGUF: a file-size limit (ulimit -f, "
        f"or the file system's own) stopped the download in {cache}: 1.0 MB needed; "
        "set HF_HUB_CACHE to another disk or raise the limit"
    )
    assert not partials(cache) and not list(cache.rglob("*.gguf"))


def test_no_space_left_mid_download_names_the_disk(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import huggingface_hub.file_download as file_download

    _, url, cache = hub
    http_get = file_download.http_get

    class FullDisk:
        def __init__(self, f: object) -> None:
            self.f = f

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> object:
            return getattr(self.f, name)

    monkeypatch.setattr(file_download, "http_get", lambda url, f, **kw: http_get(url, FullDisk(f), **kw))
    with pytest.raises(HubError) as failed:
        pull("org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q4_K_M"), endpoint=url, cache=cache)
    said = str(failed.value)
    assert said.startswith(f"cannot download tiny-Q4_K_M.gguf from org/Tiny-GGUF: the disk is full in {cache}: 1.0 MB")
    assert said.endswith(" free; free some space or set HF_HUB_CACHE to another disk") and "reached" not in said
    assert not partials(cache) and not list(cache.rglob("*.gguf"))


# -- A cancel stops the transfer at once; without the Hub, what is cached still serves ------


def test_a_cancel_stops_a_trickling_download_within_a_second(cli_env: dict[str, str], hub) -> None:
    """The cancel was checked where huggingface_hub reports progress: once per 10 MB chunk, for 8 MB never."""
    _, url, cache = hub
    cancel = threading.Event()
    failed: list[BaseException] = []

    def download() -> None:
        try:
            pull("org/Slow-GGUF", choice(url, "org/Slow-GGUF", "Q4_0"), endpoint=url, cache=cache, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failed.append(exc)

    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not partials(cache):
        assert worker.is_alive() and time.monotonic() < deadline, failed
        time.sleep(0.02)
    time.sleep(0.5)  # bytes flow, none reported yet
    cancel.set()
    cancelled = time.monotonic()
    worker.join(10)
    assert time.monotonic() - cancelled < 5.0  # the whole transfer takes 26 s; before, it ran to the end
    assert failed and isinstance(failed[0], DownloadCancelled), failed
    assert not partials(cache) and not list(cache.rglob("*.gguf"))


def test_a_cancel_stops_a_stalled_download_at_once(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that stops sending mid-file: the read waits for data, and the cancel wakes it."""
    fake, url, cache = hub
    gone = threading.Event()
    original = FakeHub.write_body

    def stall(self, req, f, start, end):  # noqa: ANN001
        if f.path != "tiny-Q8_0.gguf":
            return original(self, req, f, start, end)
        req.wfile.write((f.data or b"")[start : start + 100_000])
        req.wfile.flush()
        gone.wait(30)  # nothing more until the test ends

    monkeypatch.setattr(FakeHub, "write_body", stall)
    cancel = threading.Event()
    failed: list[BaseException] = []
    seen: list[Progress] = []

    def download() -> None:
        try:
            pull("org/Tiny-GGUF", choice(url, "org/Tiny-GGUF", "Q8_0"), endpoint=url, cache=cache, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failed.append(exc)

    worker = threading.Thread(target=download, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not [r for r in fake.requests if "tiny-Q8_0" in r and not r.startswith("HEAD")]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # the read now waits for bytes that do not come
    cancel.set()
    cancelled = time.monotonic()
    worker.join(10)
    gone.set()
    assert time.monotonic() - cancelled < 5.0  # the whole transfer takes 26 s; before, it ran to the end
    assert failed and isinstance(failed[0], DownloadCancelled), failed
    assert not partials(cache) and not list(cache.rglob("*.gguf")) and not seen


def test_without_the_hub_a_cached_model_is_pulled_from_the_cache(cli_env: dict[str, str], hub) -> None:
    import socket

    _, url, cache = hub
    pulled = models_command(cli_env, "pull", "org/Tiny-GGUF:Q8_0")
    assert pulled.returncode == 0, pulled.stderr
    path = pulled.stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        unreachable = {**cli_env, "HF_ENDPOINT": f"http://127.0.0.1:{s.getsockname()[1]}"}
    offline = {**cli_env, "HF_HUB_OFFLINE": "1"}
    for env, why in [(offline, "offline mode is on"), (unreachable, "the Hub cannot be reached")]:
        for ref in ("org/Tiny-GGUF:q8_0", "org/Tiny-GGUF"):  # the only one cached is the best there is
            again = models_command(env, "pull", ref)
            assert again.returncode == 0, again.stderr
            assert again.stdout == f"{path}\n"
            assert again.stderr.splitlines()[0] == f"{why}: tiny-Q8_0 was downloaded before and is used as it is"
        missing = models_command(env, "pull", "org/Tiny-GGUF:Q4_K_M")
        assert missing.returncode == 2 and not missing.stdout and len(missing.stderr.splitlines()) == 1
        assert why in missing.stderr and missing.stderr.rstrip().endswith("org/Tiny-GGUF:Q4_K_M is not in the cache")
        nothing = models_command(env, "pull", "org/Other-GGUF")
        assert nothing.returncode == 2 and nothing.stderr.rstrip().endswith(
            "no model of org/Other-GGUF is in the cache"
        )


def test_pull_uses_the_cached_parts_when_the_hub_goes_away(hub) -> None:
    import socket

    fake, url, cache = hub
    picked = choice(url, "org/Split-GGUF", "Q4_0")
    path = pull("org/Split-GGUF", picked, endpoint=url, cache=cache)
    from models.hub_download import cached_choices, cached_path

    assert cached_path("org/Split-GGUF", picked, cache) == path
    assert [(c.name, p) for c, p in cached_choices("org/Split-GGUF", cache)] == [("split-Q4_0", path)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{s.getsockname()[1]}"
    assert pull("org/Split-GGUF", picked, endpoint=gone, cache=cache) == path
    other = choice(url, "org/Tiny-GGUF", "Q4_K_M")
    with pytest.raises(HubError, match="the Hub cannot be reached"):
        pull("org/Tiny-GGUF", other, endpoint=gone, cache=cache)
