"""Download a GGUF model (every split part) into the standard Hugging Face cache, verified.

``hf_hub_download`` does the transfer (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_TOKEN``,
``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply); a tqdm class reports bytes, rate and ETA to a
callback.  A cancel stops the transfer at its next network read (see
:func:`models.hub.cancellable`), and huggingface_hub removes its partial blob on the way out.
Each part's size and SHA-256 are checked against the Hub's LFS metadata before the model is
offered; a cancelled, failed or corrupt download removes the parts it fetched, so nothing
half-done is listed as a model.  A download killed outright (SIGKILL, a crash) leaves a
partial blob that :func:`sweep_partials` removes once its writer is gone.  Offline, or with
the Hub unreachable, a model already in the cache is still found (:func:`cached_path`,
:func:`cached_choices`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from models.hub import DownloadCancelled, HubError, HubUnreachable, _errors, cancellable, use_hub_session
from models.hub_files import GGUFChoice, HubFile, group_gguf
from models.units import human_bytes as _gb

SPACE_MARGIN = 1.05
"""Free space wanted beyond the download itself."""

STALE_AFTER = 600.0
"""Seconds a partial with no live writer must have stood still before a sweep removes it."""

__all__ = ["DownloadCancelled", "Progress", "cached_choices", "cached_path", "pull", "sweep_partials"]


class Progress(BaseModel):
    """How far a download is, across all parts."""

    part: str
    done: int
    total: int
    bytes_per_second: float | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if not self.bytes_per_second:
            return None
        return max(0.0, (self.total - self.done) / self.bytes_per_second)


ProgressCallback = Callable[[Progress], None]


def cache_dir(override: str | Path | None = None) -> Path:
    from huggingface_hub import constants

    return Path(override or constants.HF_HUB_CACHE)


def pull(
    repo_id: str,
    choice: GGUFChoice,
    *,
    endpoint: str | None = None,
    token: str | None = None,
    cache: str | Path | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    free_space: Callable[[Path], int] | None = None,
) -> Path:
    """Download every part of ``choice``; returns the path of the first part (what llama.cpp loads).

    A part already in the cache is checked against the Hub (a newer revision is fetched); with
    the Hub unreachable the cached one is used as it is.
    """
    from huggingface_hub import hf_hub_download

    use_hub_session()
    folder = cache_dir(cache)
    with _errors(f"download {choice.name} from {repo_id}", repo_id, folder=folder):
        folder.mkdir(parents=True, exist_ok=True)
        sweep_partials(folder)
        cached = {p.path: path for p in choice.parts if (path := _in_cache(repo_id, p.path, folder)) is not None}
        need = sum(p.size for p in choice.parts if p.path not in cached)
        free = (free_space or _free_bytes)(folder)
    if int(need * SPACE_MARGIN) > free:
        raise HubError(
            f"{choice.name} needs {_gb(int(need * SPACE_MARGIN))} of disk space and {folder} has {_gb(free)} free; "
            "free some space or set HF_HUB_CACHE to another disk"
        )
    meter = _Meter(choice.size - need, choice.size, on_progress, cancel)
    fetched: list[Path] = []
    paths: list[Path] = []
    try:
        for part in choice.parts:
            meter.part = part.path
            meter.check()
            try:
                with (
                    _errors(f"download {part.path} from {repo_id}", repo_id, folder=folder, need=need),
                    cancellable(cancel),
                ):
                    path = Path(
                        hf_hub_download(
                            repo_id,
                            part.path,
                            cache_dir=folder,
                            endpoint=endpoint,
                            token=token,
                            tqdm_class=meter.tqdm_class(),
                        )
                    )
            except HubUnreachable:
                if part.path not in cached:
                    raise
                path = cached[part.path]  # not checked for a newer revision, but here
            if part.path not in cached:
                fetched.append(path)
                with _errors(f"download {part.path} from {repo_id}", repo_id, folder=folder):
                    _verify(path, part)
            paths.append(path)
    except BaseException:
        for path in fetched:  # nothing half-done may look like a model
            _remove_cached(path)
        raise
    return paths[0]


def cached_path(repo_id: str, choice: GGUFChoice, cache: str | Path | None = None) -> Path | None:
    """The first part of ``choice`` when every part is in the cache (at the revision last fetched), else None."""
    folder = cache_dir(cache)
    paths = [_in_cache(repo_id, p.path, folder) for p in choice.parts]
    return paths[0] if all(paths) else None


def cached_choices(repo_id: str, cache: str | Path | None = None) -> list[tuple[GGUFChoice, Path]]:
    """The GGUF models of ``repo_id`` found whole in the cache, with the path of each one's first part.

    What ``models pull`` offers without the Hub: the snapshot ``refs/main`` names comes first,
    then the others, newest first; a name found in two snapshots is taken from the first.
    """
    repo = cache_dir(cache) / ("models--" + repo_id.replace("/", "--"))
    snapshots = sorted(
        (p for p in (repo / "snapshots").glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    with contextlib.suppress(OSError):
        main = (repo / "refs" / "main").read_text().strip()
        snapshots.sort(key=lambda p: p.name != main)
    found: dict[str, tuple[GGUFChoice, Path]] = {}
    for snapshot in snapshots:
        files = []
        for path in snapshot.rglob("*"):
            with contextlib.suppress(OSError):
                if path.suffix.lower() == ".gguf" and path.is_file():  # follows the link: its blob is there
                    files.append(HubFile(path=path.relative_to(snapshot).as_posix(), size=path.stat().st_size))
        for choice in group_gguf(files):
            if choice.kind == "model" and choice.complete and choice.name not in found:
                found[choice.name] = (choice, snapshot / choice.first)
    return sorted(found.values(), key=lambda c: (c[0].size, c[0].name))


def _in_cache(repo_id: str, filename: str, folder: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=folder)
    return Path(found) if isinstance(found, str) else None


def sweep_partials(
    cache: str | Path | None = None, repo_id: str | None = None, *, quiet_for: float = STALE_AFTER
) -> int:
    """Remove the ``.incomplete`` blobs of downloads whose process died (SIGKILL, a crash); returns the bytes freed.

    huggingface_hub writes a partial only while it holds an flock on ``.locks/<repo>/<etag>.lock``
    and the kernel drops that lock when the writer dies, so a partial whose lock is free at once
    has no live writer; it is removed under that lock, so no download can start on it meanwhile.
    It must also have stood still for ``quiet_for`` seconds: a backstop for mounts where flock
    grants everyone (some NFS, Lustre, GPFS).  A live download writes every 256 KiB
    (:data:`models.hub.CHUNK`), so even a slow one grows well within that.  Without flock
    (Windows) nothing is swept.  ``repo_id``: only that repository's partials.
    """
    try:
        import fcntl
    except ImportError:
        return 0
    folder = cache_dir(cache)
    repo = "models--" + repo_id.replace("/", "--") if repo_id else "models--*"
    freed = 0
    for partial in folder.glob(f"{repo}/blobs/*.incomplete"):
        etag = partial.name.split(".", 1)[0]  # <etag>[.<random>].incomplete
        lock = folder / ".locks" / partial.parent.parent.name / f"{etag}.lock"
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o664)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a writer holds it
            seen = partial.stat()
            if time.time() - seen.st_mtime >= quiet_for:
                partial.unlink()
                freed += seen.st_size
        except OSError:
            pass
        finally:
            os.close(fd)  # releases the flock
    return freed


def _verify(path: Path, part: HubFile) -> None:
    size = path.stat().st_size
    if size != part.size:
        raise HubError(f"{part.path} arrived with {size} bytes instead of {part.size}; it was removed, try again")
    if part.sha256:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        if digest.hexdigest() != part.sha256:
            raise HubError(f"{part.path} is corrupt (its SHA-256 does not match the Hub's); it was removed, try again")


def _remove_cached(path: Path) -> None:
    """Remove a snapshot entry and the blob it points to."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError:
        pass


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free


class _Meter:
    """Counts bytes over all parts, reports at most 10 times a second, and cancels between chunks."""

    def __init__(self, done: int, total: int, on_progress: ProgressCallback | None, cancel: threading.Event | None):
        self.done, self.total = done, total
        self.on_progress, self.cancel = on_progress, cancel
        self.part = ""
        self.started = time.monotonic()
        self.start_done = done
        self.reported = 0.0
        self.reported_part = ""

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled("the download was cancelled; nothing was kept")

    def add(self, n: int) -> None:
        self.check()
        self.done += n
        now = time.monotonic()
        new_part = self.part != self.reported_part
        if self.on_progress is not None and (new_part or now - self.reported >= 0.1 or self.done >= self.total):
            self.reported, self.reported_part = now, self.part
            elapsed = now - self.started
            rate = (self.done - self.start_done) / elapsed if elapsed > 0 else None
            self.on_progress(Progress(part=self.part, done=self.done, total=self.total, bytes_per_second=rate))

    def tqdm_class(self) -> type:
        from huggingface_hub.utils import tqdm as hf_tqdm

        meter = self

        class MeterTqdm(hf_tqdm):  # type: ignore[misc,valid-type]
            def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002,ANN003
                kwargs["disable"] = True  # no bar on the terminal: the UI draws its own
                super().__init__(*args, **kwargs)

            def update(self, n: float | None = 1) -> bool | None:
                meter.add(int(n or 0))
                return None

        return MeterTqdm


def environment_summary() -> dict[str, str]:
    """Which Hub settings are in effect (for ``sinkchat models`` and error messages)."""
    from huggingface_hub import constants

    return {
        "endpoint": constants.ENDPOINT,
        "cache": str(constants.HF_HUB_CACHE),
        "offline": str(bool(constants.HF_HUB_OFFLINE)),
        "token": "set" if os.environ.get("HF_TOKEN") else "not set",
    }
