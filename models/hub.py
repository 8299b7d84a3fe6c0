"""The Hugging Face Hub catalogue, through ``huggingface_hub`` (its endpoint, token and offline mode).

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are honoured by the library itself;
``endpoint=`` and ``token=`` override them (the tests point the client at a local server).
Every failure a user can meet (offline, no such repository, a gated one without a token, a full disk)
becomes a :class:`HubError` with a sentence that says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Literal, TypeGuard

from pydantic import BaseModel

from models.errors import ModelError
from models.hub_files import GGUFChoice, HubFile, group_gguf
from models.units import human_bytes as _gb

Sort = Literal["downloads", "likes", "last_modified", "trending_score"]


class HubError(ModelError):
    """The Hub could not answer (offline, not found, gated, network)."""


class HubModel(BaseModel):
    """A repository in the search results."""

    repo_id: str
    downloads: int | None = None
    likes: int | None = None
    last_modified: datetime | None = None
    gated: bool | str = False
    private: bool = False
    architecture: str | None = None
    parameters: int | None = None
    context_length: int | None = None


class HubClient:
    def __init__(self, endpoint: str | None = None, token: str | None = None) -> None:
        from huggingface_hub import HfApi

        self.api = HfApi(endpoint=endpoint, token=token)
        self._reachable = False

    def _probe(self) -> None:
        """One quick request before the first search: an unreachable Hub is said at once.

        ``huggingface_hub`` retries a failed connection with backoff for about 23 s; a
        person at the search box should not wait for that to learn they are offline.
        """
        from huggingface_hub import constants
        from huggingface_hub.utils import get_session

        if self._reachable or constants.HF_HUB_OFFLINE:
            return  # offline mode is reported by the library itself
        get_session().get(f"{self.api.endpoint}/api/models", params={"limit": 1}, timeout=5)
        self._reachable = True

    def search(self, query: str = "", *, sort: Sort = "downloads", limit: int = 30, offset: int = 0) -> list[HubModel]:
        """GGUF repositories matching ``query``, ``limit`` at a time (``offset`` pages on)."""
        with _errors("search the Hub"):
            self._probe()
            found = self.api.list_models(
                filter="gguf",
                search=query or None,
                sort=sort,
                limit=offset + limit,
                expand=["downloads", "likes", "lastModified", "gated", "private", "gguf"],
            )
            return [_model(info) for info in islice(found, offset, offset + limit)]

    def files(self, repo_id: str) -> list[GGUFChoice]:
        """The repository's GGUF files, grouped for picking (see :func:`models.hub_files.group_gguf`)."""
        from huggingface_hub.hf_api import RepoFile

        with _errors(f"list the files of {repo_id}", repo_id):
            entries = self.api.list_repo_tree(repo_id, recursive=True)
            files = [
                HubFile(path=e.path, size=e.size, sha256=e.lfs.sha256 if e.lfs else None)
                for e in entries
                if isinstance(e, RepoFile)
            ]
        return group_gguf(files)


def _model(info) -> HubModel:  # noqa: ANN001 - a huggingface_hub ModelInfo
    gguf = getattr(info, "gguf", None) or {}
    return HubModel(
        repo_id=info.id,
        downloads=info.downloads,
        likes=info.likes,
        last_modified=info.last_modified,
        gated=info.gated or False,
        private=bool(info.private),
        architecture=gguf.get("architecture"),
        parameters=gguf.get("total"),
        context_length=gguf.get("context_length"),
    )


class _errors:
    """Turn huggingface_hub and network exceptions into one clear :class:`HubError`.

    ``folder`` and ``need`` (bytes still to write) name what a full disk had to hold: an
    OS error of this machine (disk, permissions, read-only folder) is said as such, never
    as an unreachable Hub.
    """

    def __init__(
        self, doing: str, repo_id: str | None = None, *, folder: Path | None = None, need: int | None = None
    ) -> None:
        self.doing, self.repo_id, self.folder, self.need = doing, repo_id, folder, need

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, HubError):
            return False
        raise HubError(self.explain(exc)) from exc

    def explain(self, exc: Exception) -> str:
        from huggingface_hub import errors

        repo = self.repo_id or "the repository"
        if isinstance(exc, errors.OfflineModeIsEnabled):
            return f"cannot {self.doing}: offline mode is on (HF_HUB_OFFLINE); only local models are available"
        if isinstance(exc, errors.GatedRepoError):
            return (
                f"{repo} is gated: accept its terms on the Hub, then set HF_TOKEN (or run `hf auth login`)"
                " with a token of that account"
            )
        if isinstance(exc, errors.RepositoryNotFoundError):
            return f"{repo} was not found on the Hub (or it is private and no token with access is set)"
        if isinstance(exc, errors.HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else "?"
            return f"cannot {self.doing}: the Hub answered HTTP {status}"
        transport = any(c.__name__ == "TransportError" for c in type(exc).__mro__)  # httpx or httpx2
        if not transport and _is_local_os_error(exc):
            return f"cannot {self.doing}: {self.local(exc)}"
        if transport or isinstance(exc, OSError):
            return f"cannot {self.doing}: the Hub cannot be reached ({type(exc).__name__}); check the network"
        return f"cannot {self.doing}: {exc}"

    def local(self, exc: OSError) -> str:
        """This machine's OS error in words: where, and for a full disk how much was needed and is free."""
        path = Path(exc.filename) if exc.filename else None
        if exc.errno in _FULL:
            folder = self.folder or (path.parent if path else None)
            said, hint = _FULL[exc.errno]
            amounts = [f"{_gb(self.need)} needed"] if self.need else []
            if folder and exc.errno != errno.EFBIG:
                with contextlib.suppress(OSError):
                    amounts.append(f"{_gb(shutil.disk_usage(folder).free)} free")
            sizes = f": {', '.join(amounts)}" if amounts else ""
            return f"{said.format(where=f' in {folder}' if folder else '')}{sizes}; {hint}"
        at = f" on {path or self.folder}" if path or self.folder else ""
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied{at}; set HF_HUB_CACHE to a folder you can write to"
        if exc.errno == errno.EROFS:
            return f"the file system is read-only{at}; set HF_HUB_CACHE to a writable folder"
        return f"{exc.strerror or exc}{at}"


_ELSEWHERE = "free some space or set HF_HUB_CACHE to another disk"
_FULL = {
    code: said
    for name, said in [
        ("ENOSPC", ("the disk is full{where}", _ELSEWHERE)),
        ("EDQUOT", ("the disk quota is used up{where}", _ELSEWHERE)),
        (
            "EFBIG",
            (
                "a file-size limit (ulimit -f, or the file system's own) stopped the download{where}",
                "set HF_HUB_CACHE to another disk or raise the limit",
            ),
        ),
    ]
    if (code := getattr(errno, name, None)) is not None
}
"""Full-disk errors: what to say (``{where}``: the folder) and what to do."""


def _is_local_os_error(exc: BaseException) -> TypeGuard[OSError]:
    """An OS error of this machine (disk, permissions), not of the network.

    Socket errors are OSErrors too; they are the ones with a connection, timeout or
    resolver type, or a network errno.  An OSError without an errno is huggingface_hub's
    own word for a failed transfer (a short read, no connection for the metadata).
    """
    import socket
    import ssl

    if not isinstance(exc, OSError) or exc.errno is None:
        return False
    network = (ConnectionError, TimeoutError, socket.gaierror, socket.herror, ssl.SSLError)
    return not isinstance(exc, network) and exc.errno not in _NETWORK_ERRNOS


_NETWORK_ERRNOS = {
    getattr(errno, name)
    for name in ("ENETDOWN", "ENETUNREACH", "ENETRESET", "EHOSTDOWN", "EHOSTUNREACH", "ENOTCONN", "EADDRNOTAVAIL")
    if hasattr(errno, name)
}


def iter_pages(client: HubClient, query: str, *, page: int = 30, sort: Sort = "downloads") -> Iterator[list[HubModel]]:
    """Search results page by page, until a short page."""
    offset = 0
    while True:
        results = client.search(query, sort=sort, limit=page, offset=offset)
        yield results
        if len(results) < page:
            return
        offset += page
