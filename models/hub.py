"""The Hugging Face Hub catalogue, through ``huggingface_hub`` (its endpoint, token and offline mode).

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are honoured by the library itself;
``endpoint=`` and ``token=`` override them (the tests point the client at a local server).
Every failure a user can meet (offline, no such repository, a gated one without a token)
becomes a :class:`HubError` with a sentence that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Literal

from pydantic import BaseModel

from models.errors import ModelError
from models.hub_files import GGUFChoice, HubFile, group_gguf

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
    """Turn huggingface_hub and network exceptions into one clear :class:`HubError`."""

    def __init__(self, doing: str, repo_id: str | None = None) -> None:
        self.doing, self.repo_id = doing, repo_id

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
        if transport or isinstance(exc, OSError):
            return f"cannot {self.doing}: the Hub cannot be reached ({type(exc).__name__}); check the network"
        return f"cannot {self.doing}: {exc}"


def iter_pages(client: HubClient, query: str, *, page: int = 30, sort: Sort = "downloads") -> Iterator[list[HubModel]]:
    """Search results page by page, until a short page."""
    offset = 0
    while True:
        results = client.search(query, sort=sort, limit=page, offset=offset)
        yield results
        if len(results) < page:
            return
        offset += page
