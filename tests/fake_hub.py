"""A local stand-in for the Hugging Face Hub API on 127.0.0.1, for the real ``huggingface_hub`` client.

It speaks the parts sinkchat uses: model search (``/api/models``, with ``Link`` paging),
repository trees (``/api/models/{repo}/tree/{rev}``) and file downloads
(``/{repo}/resolve/{rev}/{file}``, with the ETag / commit / size headers and ``Range``).
Repositories can be gated (401/403) and files can be served from disk, so the real
SmolLM2 GGUF can be "downloaded".
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeFile:
    path: str
    data: bytes | None = None
    source: Path | None = None
    size_override: int | None = None

    @property
    def size(self) -> int:
        if self.size_override is not None:
            return self.size_override
        return len(self.data) if self.data is not None else self.source.stat().st_size  # type: ignore[union-attr]

    @property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        if self.data is not None:
            digest.update(self.data)
        else:
            with self.source.open("rb") as f:  # type: ignore[union-attr]
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    files: list[FakeFile]
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2026-10-01T12:00:00.000Z"
    gated: bool | str = False
    private: bool = False
    gguf: dict | None = None


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    page_size: int = 2
    token: str = "hf_good_token"

    def add(self, repo: FakeRepo) -> None:
        self.repos[repo.repo_id] = repo

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                hub.requests.append(self.path)
                hub.handle(self, head=False)

            def do_HEAD(self) -> None:  # noqa: N802
                hub.requests.append("HEAD " + self.path)
                hub.handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- routes --------------------------------------------------------------------------

    def handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlparse(req.path)
        query = parse_qs(url.query)
        path = unquote(url.path)
        if path == "/api/models":
            return self.search(req, query)
        tree = re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(?:/(.*))?", path)
        if tree:
            return self.tree(req, tree.group(1), query)
        info = re.fullmatch(r"/api/models/(.+?)(?:/revision/[^/]+)?", path)
        if info and info.group(1) in self.repos:
            repo = self.repos[info.group(1)]
            return self.json(
                req, {"id": repo.repo_id, "sha": COMMIT, "siblings": [{"rfilename": f.path} for f in repo.files]}
            )
        resolve = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
        if resolve:
            return self.resolve(req, resolve.group(1), resolve.group(3), head)
        self.error(req, 404, "RepoNotFound", "Repository not found")

    def authorised(self, req: BaseHTTPRequestHandler, repo: FakeRepo) -> bool:
        if not repo.gated and not repo.private:
            return True
        auth = req.headers.get("authorization", "")
        if auth == f"Bearer {self.token}":
            return True
        if repo.private:
            self.error(req, 404 if not auth else 401, "RepoNotFound", "Repository not found")
        else:
            self.error(req, 401 if not auth else 403, "GatedRepo", f"Access to model {repo.repo_id} is restricted.")
        return False

    def search(self, req: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        text = (query.get("search") or [""])[0].lower()
        repos = [r for r in self.repos.values() if text in r.repo_id.lower() and not r.private]
        if "gguf" in query.get("filter", []):
            repos = [r for r in repos if any(f.path.endswith(".gguf") for f in r.files)]
        key = (query.get("sort") or ["downloads"])[0]
        if key == "lastModified":
            repos.sort(key=lambda r: r.last_modified, reverse=True)
        else:
            repos.sort(key=lambda r: getattr(r, key, 0) or 0, reverse=True)
        start = int((query.get("cursor") or ["0"])[0])
        page = repos[start : start + self.page_size]
        body = [
            {
                "id": r.repo_id,
                "modelId": r.repo_id,
                "downloads": r.downloads,
                "likes": r.likes,
                "lastModified": r.last_modified,
                "private": r.private,
                "gated": r.gated,
                "tags": ["gguf"],
                **({"gguf": r.gguf} if r.gguf else {}),
            }
            for r in page
        ]
        headers = {}
        if start + self.page_size < len(repos):
            host = req.headers.get("host")
            params = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs if k != "cursor")
            headers["Link"] = f'<http://{host}/api/models?{params}&cursor={start + self.page_size}>; rel="next"'
        self.json(req, body, headers)

    def tree(self, req: BaseHTTPRequestHandler, repo_id: str, query: dict[str, list[str]]) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self.error(req, 404, "RepoNotFound", "Repository not found")
        if not self.authorised(req, repo):
            return
        entries = [
            {
                "type": "file",
                "oid": hashlib.sha1(f.path.encode()).hexdigest(),
                "size": f.size,
                "path": f.path,
                **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}} if f.path.endswith(".gguf") else {}),
            }
            for f in repo.files
        ]
        self.json(req, entries)

    def resolve(self, req: BaseHTTPRequestHandler, repo_id: str, filename: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return self.error(req, 404, "RepoNotFound", "Repository not found")
        if not self.authorised(req, repo):
            return
        found = next((f for f in repo.files if f.path == filename), None)
        if found is None:
            return self.error(req, 404, "EntryNotFound", "Entry not found")
        self.send_file(req, found, head)

    def send_file(self, req: BaseHTTPRequestHandler, f: FakeFile, head: bool) -> None:
        size = f.size
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("range", ""))
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else size - 1
        req.send_response(206 if match else 200)
        req.send_header("Content-Length", str(end - start + 1))
        req.send_header("ETag", f'"{f.sha256}"')
        req.send_header("X-Linked-Etag", f'"{f.sha256}"')
        req.send_header("X-Linked-Size", str(size))
        req.send_header("X-Repo-Commit", COMMIT)
        req.send_header("Accept-Ranges", "bytes")
        if match:
            req.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        req.end_headers()
        if head:
            return
        self.write_body(req, f, start, end)

    def write_body(self, req: BaseHTTPRequestHandler, f: FakeFile, start: int, end: int) -> None:
        """Stream the bytes; tests override this to drop the connection or corrupt the data."""
        if f.data is not None:
            req.wfile.write(f.data[start : end + 1])
            return
        with f.source.open("rb") as src:  # type: ignore[union-attr]
            src.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = src.read(min(1 << 20, left))
                if not chunk:
                    break
                req.wfile.write(chunk)
                left -= len(chunk)

    def json(self, req: BaseHTTPRequestHandler, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            req.send_header(key, value)
        req.end_headers()
        req.wfile.write(data)

    def error(self, req: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", message)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)
