"""``sinkchat serve`` on the character-level fake model: the real server, pool and sessions, no weights.

Each token is a character, so the cache's text is exactly the conversation the model sees;
a reply is a digest of that text, so equal replies mean equal views.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai

import sinkchat.chat as chat_module
from models.templates import template_text
from sinkchat.chat import Chat
from sinkchat.serve.app import Limits, ServeConfig
from sinkchat.serve.pool import ConversationPool
from sinkchat.serve.server import BackgroundServer
from sinkchat.session import Session, SessionLibrary
from tests.fake_model import EOG, FakeContext, FakeModel

MODEL = "fake-chat"


class ViewSampler:
    """Replies "seen N: DIGEST" about the cache it sees, or plays the context's script (one token per ``delay``)."""

    def __init__(self, settings: object, n_vocab: int) -> None:
        self._reply: list[int] | None = None

    def sample(self, context: FakeContext) -> int:
        if self._reply is None:
            for check in context.on_reply_start:
                check()
            if context.script:
                self._reply, context.script = context.script, []
            else:
                view = "".join(chr(t) for _, t in sorted(context.cells) if t < 0xE0000)
                digest = hashlib.sha256(view.encode()).hexdigest()[:8]
                self._reply = [ord(c) for c in f"seen {len(view)}: {digest}"] + [EOG]
        time.sleep(getattr(context, "delay", 0.0))
        return self._reply.pop(0) if self._reply else EOG

    def close(self) -> None:
        pass


class ServerUnderTest:
    """A running server on 127.0.0.1 and an OpenAI client for it; ``restart`` keeps the sessions folder."""

    model_id = MODEL

    def __init__(
        self,
        folder: Path,
        *,
        n_ctx: int = 1500,
        api_key: str | None = None,
        limits: Limits | None = None,
        max_queue: int = 32,
    ) -> None:
        self.folder, self.n_ctx, self.api_key, self.max_queue = folder, n_ctx, api_key, max_queue
        self.limits = limits or Limits(default_max_tokens=200)
        folder.mkdir(parents=True, exist_ok=True)
        self.server: BackgroundServer | None = None
        self.start()

    def make_chat(self) -> Chat:
        raise NotImplementedError

    def start(self) -> None:
        from models.sampler import SamplingSettings

        self.chat = self.make_chat()
        self.library = SessionLibrary(self.folder / "sessions", snapshots_in_memory=4)
        self.pool = ConversationPool(Session.detached(self.chat, self.library), max_queue=self.max_queue)
        config = ServeConfig(
            model_id=self.model_id,
            aliases=frozenset({self.model_id}),
            sampling=SamplingSettings(temperature=0.0),
            limits=self.limits,
            api_key=self.api_key,
        )
        self.server = BackgroundServer(self.pool, config).start()
        self.url = self.server.url
        self.client = openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.api_key or "none", max_retries=0)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.library.close()
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def wait_idle(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while (self.pool.busy or self.pool.queued) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not self.pool.busy, "the server is still working"

    def ask(self, messages: list[dict], **options: object) -> tuple[str, dict]:
        """One non-streaming request: the reply and the ``sinkchat`` facts."""
        response = self.client.chat.completions.create(model=self.model_id, messages=messages, **options)  # type: ignore[arg-type]
        return response.choices[0].message.content or "", (response.model_extra or {})["sinkchat"]

    def __enter__(self) -> ServerUnderTest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FakeServer(ServerUnderTest):
    """The character-level fake model: the cache's text is the conversation."""

    def make_chat(self) -> Chat:
        self.model_file = self.folder / f"{MODEL}.gguf"
        if not self.model_file.exists():
            self.model_file.write_bytes(b"GGUF fake weights")
        model = FakeModel(template_text("chatml"), name=MODEL)
        model.path = self.model_file
        self.ctx = FakeContext(self.n_ctx)
        self.ctx.swa_full = False  # type: ignore[attr-defined]
        self.ctx.delay = 0.0  # type: ignore[attr-defined]
        return Chat(model, self.ctx)  # type: ignore[arg-type]

    def view(self) -> str:
        """The text in the cache now."""
        return "".join(chr(t) for _, t in sorted(self.ctx.cells) if t < 0xE0000)


class ModelServer(ServerUnderTest):
    """A real GGUF model (loaded again at each start, as after a restart)."""

    def __init__(self, folder: Path, model: Path, *, chat_template: str | None = None, **options: Any) -> None:
        self.model_path, self.chat_template = model, chat_template
        self.model_id = model.name.removesuffix(".gguf")
        super().__init__(folder, **options)

    def make_chat(self) -> Chat:
        return Chat.load(self.model_path, n_ctx=self.n_ctx, chat_template=self.chat_template)

    def cache_text(self, start: int = 0, end: int | None = None) -> str:
        engine = self.chat.engine
        return self.chat.model.detokenize(engine.tokens[start:end], special=True)


def raw_request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
    """One HTTP request with exactly these bytes: status, JSON body (None if not JSON), headers."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = None
        return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def patch_sampler(monkeypatch) -> None:  # noqa: ANN001 - pytest's MonkeyPatch
    monkeypatch.setattr(chat_module, "Sampler", ViewSampler)
