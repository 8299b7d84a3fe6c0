"""The Hugging Face Hub catalogue, through ``huggingface_hub`` (its endpoint, token and offline mode).

``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are honoured by the library itself;
``endpoint=`` and ``token=`` override them (the tests point the client at a local server).
Every failure a user can meet (offline, no such repository, a gated one without a token, a full disk)
becomes a :class:`HubError` with a sentence that says what to do.

All of huggingface_hub's HTTP goes through :func:`use_hub_session`'s transport: a connection
that cannot be made fails at once (the library would retry it with backoff for 23 s, logging
every try), and a download in :func:`cancellable` stops at its next network read, or at once
when it is stalled, when its cancel event is set.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import threading
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

CONNECT_TIMEOUT = 5.0
"""Seconds a connection to the Hub may take before it counts as unreachable."""
READ_TIMEOUT = 60.0
"""Seconds a request may wait for data where huggingface_hub sets no limit of its own (listings)."""
CHUNK = 256 << 10
"""Bytes huggingface_hub writes (and reports to the progress bar) at a time; its own 10 MB left a slow
download without progress for minutes."""


class HubError(ModelError):
    """The Hub could not answer (offline, not found, gated, network)."""


class HubUnreachable(HubError):
    """Offline mode is on, or no connection to the Hub could be made: what is already downloaded still works."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
        """``offline mode is on`` or ``the Hub cannot be reached``."""


class DownloadCancelled(HubError):
    """The user stopped the download."""


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

        use_hub_session()
        self.api = HfApi(endpoint=endpoint, token=token)

    def search(self, query: str = "", *, sort: Sort = "downloads", limit: int = 30, offset: int = 0) -> list[HubModel]:
        """GGUF repositories matching ``query``, ``limit`` at a time (``offset`` pages on)."""
        with _errors("search the Hub"):
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
        said = self.explain(exc)
        reason = self.unreachable(exc)
        raise (HubUnreachable(said, reason) if reason else HubError(said)) from exc

    def unreachable(self, exc: Exception) -> str | None:
        """``offline mode is on`` / ``the Hub cannot be reached`` when that is why ``exc`` happened, else None."""
        from huggingface_hub import constants, errors

        if isinstance(exc, errors.OfflineModeIsEnabled) or (
            isinstance(exc, errors.LocalEntryNotFoundError) and constants.HF_HUB_OFFLINE
        ):
            return "offline mode is on"
        if isinstance(exc, _NoConnection):
            return "the Hub cannot be reached"
        return None

    def explain(self, exc: Exception) -> str:
        from huggingface_hub import errors

        repo = self.repo_id or "the repository"
        if self.unreachable(exc) == "offline mode is on":
            return f"cannot {self.doing}: offline mode is on (HF_HUB_OFFLINE); only local models are available"
        if isinstance(exc, _NoConnection):
            return f"cannot {self.doing}: the Hub cannot be reached ({exc}); check the network"
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


# -- the HTTP session: fail fast, cancel at once ------------------------------------------------


class _NoConnection(Exception):  # noqa: N818 - said to the user through _errors
    """No connection to the Hub could be made.

    Raised by the transport instead of httpx's ``ConnectError``/``ConnectTimeout``, which
    huggingface_hub retries five times with backoff (1 + 2 + 4 + 8 + 8 s) and a log line per
    try: a Hub that refuses or does not answer a connection is unreachable now, not in 23 s.
    """


_session = {"installed": False}
_session_lock = threading.Lock()
_local = threading.local()


def use_hub_session() -> None:
    """Route huggingface_hub's HTTP through sinkchat's transport, once per process.

    - A connection gets :data:`CONNECT_TIMEOUT` seconds, and one that fails is not retried
      (:class:`_NoConnection`); a request without a time limit of its own gets :data:`READ_TIMEOUT`.
    - A download inside :func:`cancellable` stops at its next network read once cancelled, and a
      stalled one at once (its socket is shut down).
    - Downloads use HTTP, not Xet (``hf_xet``): Xet transfers run in Rust threads that a
      cancel cannot stop between reads, and report each byte twice to a progress class.
      They are written, and their progress reported, every :data:`CHUNK` bytes.
    - The library's log records go to the application's logging (a file under the TUI), not
      to a stderr handler of its own that doubles every line and tears through the TUI.
    """
    from huggingface_hub import constants

    constants.HF_HUB_DISABLE_XET = True  # each time: a test may have put the library's own values back
    constants.DOWNLOAD_CHUNK_SIZE = min(constants.DOWNLOAD_CHUNK_SIZE, CHUNK)
    with _session_lock:
        if _session["installed"]:
            return
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils import _http

        base = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
        wrap = _transport_wrapper()

        def factory():  # noqa: ANN202 - an httpx2.Client
            client = base()
            with contextlib.suppress(AttributeError):  # httpx2's own attributes: wrap what is there
                client._transport = wrap(client._transport)
                client._mounts = {url: None if t is None else wrap(t) for url, t in client._mounts.items()}
            return client

        set_client_factory(factory)
        library = logging.getLogger("huggingface_hub")
        for handler in list(library.handlers):
            if type(handler) is logging.StreamHandler:
                library.removeHandler(handler)
        _session["installed"] = True


class _Transfer:
    """The download under way in one thread: its cancel event and the sockets it reads from."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.sockets: set = set()
        self.lock = threading.Lock()
        self.done = threading.Event()

    def check(self) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled("the download was cancelled; nothing was kept")

    def watch(self, sock: object) -> None:
        with self.lock:
            self.sockets.add(sock)
        if self.cancel.is_set():
            self.stop()

    def unwatch(self, sock: object) -> None:
        with self.lock:
            self.sockets.discard(sock)

    def stop(self) -> None:
        """Wake a read that waits for data: shut the download's sockets down."""
        import socket

        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, also under TLS

    def wait_for_cancel(self) -> None:
        while not self.done.is_set():
            if self.cancel.wait(0.05):
                self.stop()
                return


@contextlib.contextmanager
def cancellable(cancel: threading.Event | None) -> Iterator[None]:
    """Downloads made in this thread inside the block stop with :class:`DownloadCancelled` once ``cancel`` is set."""
    if cancel is None:
        yield
        return
    use_hub_session()
    transfer = _Transfer(cancel)
    _local.transfer = transfer
    threading.Thread(target=transfer.wait_for_cancel, name="hub-download-cancel", daemon=True).start()
    try:
        yield
    finally:
        _local.transfer = None
        transfer.done.set()


def _transport_wrapper():  # noqa: ANN202 - a class, made here so that httpx2 is imported only when used
    import httpx2

    class Stream(httpx2.SyncByteStream):
        def __init__(self, inner: httpx2.SyncByteStream, transfer: _Transfer, sock: object) -> None:
            self.inner, self.transfer, self.sock = inner, transfer, sock

        def __iter__(self) -> Iterator[bytes]:
            if self.sock is not None:
                self.transfer.watch(self.sock)
            try:
                for chunk in self.inner:
                    self.transfer.check()
                    yield chunk
            except HubError:
                raise
            except Exception:
                self.transfer.check()  # a read broken by the cancel is the cancel
                raise
            finally:
                if self.sock is not None:
                    self.transfer.unwatch(self.sock)

        def close(self) -> None:
            self.inner.close()

    class Transport(httpx2.BaseTransport):
        def __init__(self, inner: httpx2.BaseTransport) -> None:
            self.inner = inner

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            transfer: _Transfer | None = getattr(_local, "transfer", None)
            if transfer is not None:
                transfer.check()
            timeout = dict(request.extensions.get("timeout") or {})
            connect = timeout.get("connect")
            timeout["connect"] = CONNECT_TIMEOUT if connect is None else min(connect, CONNECT_TIMEOUT)
            if timeout.get("read") is None:
                timeout["read"] = READ_TIMEOUT
            request.extensions["timeout"] = timeout
            try:
                response = self.inner.handle_request(request)
            except httpx2.ConnectTimeout as exc:
                raise _NoConnection(f"no connection within {timeout['connect']:g} s") from exc
            except httpx2.ConnectError as exc:
                if transfer is not None:
                    transfer.check()
                raise _NoConnection(_reason(exc)) from exc
            if transfer is not None:
                network = response.extensions.get("network_stream")
                sock = network.get_extra_info("socket") if network is not None else None
                response.stream = Stream(response.stream, transfer, sock)  # type: ignore[arg-type]
            return response

        def close(self) -> None:
            self.inner.close()

    return Transport


def _reason(exc: Exception) -> str:
    """``connection refused`` from ``[Errno 111] Connection refused``."""
    import re

    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).strip()) or type(exc).__name__
    return text[:1].lower() + text[1:]


def iter_pages(client: HubClient, query: str, *, page: int = 30, sort: Sort = "downloads") -> Iterator[list[HubModel]]:
    """Search results page by page, until a short page."""
    offset = 0
    while True:
        results = client.search(query, sort=sort, limit=page, offset=offset)
        yield results
        if len(results) < page:
            return
        offset += page
