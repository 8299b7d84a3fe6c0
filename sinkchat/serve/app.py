"""The HTTP side of ``sinkchat serve``: an OpenAI-compatible API on Starlette.

Handlers validate a request, hand it to the :class:`ConversationPool` and relay its events:
as one JSON body, or as server-sent events the way OpenAI clients read them.  Every error
has OpenAI's shape and a status the official client maps to its own exception; nothing a
client sends can produce a traceback or stop the server.  A client that disconnects stops
its reply at the next token (the conversation stays consistent with what was generated).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from models.sampler import SamplingSettings
from sinkchat.serve.matching import parse_messages
from sinkchat.serve.pool import ConversationPool, Done, Event, Facts, Failed, Job, Piece, Ready
from sinkchat.serve.protocol import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    new_id,
    now,
    usage,
    validation_error,
)

log = logging.getLogger(__name__)

SESSION_HEADER = "x-sinkchat-session"
_R = TypeVar("_R", ChatRequest, CompletionRequest)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: a bad or hostile client meets a 400/413 that names the limit."""

    max_body_bytes: int = 16 << 20
    max_messages: int = 4096
    max_tokens: int = 32768
    default_max_tokens: int | None = 1024
    """A reply's limit when the request gives none (None: until the model ends it)."""


@dataclass
class ServeConfig:
    model_id: str
    aliases: frozenset[str]
    sampling: SamplingSettings
    limits: Limits
    api_key: str | None = None
    created: int = 0


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def create_app(pool: ConversationPool, config: ServeConfig) -> Starlette:
    """The ASGI app; ``pool`` owns the model and is closed by the caller."""

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                _authorize(request, config.api_key)
                return await handler(request)
            except ApiError as exc:
                return error_response(exc)
            except ClientDisconnect:
                return Response(status_code=499)

        return run

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [_model_card(config, pool)]})

    async def model(request: Request) -> Response:
        _check_model(request.path_params["name"], config)
        return JSONResponse(_model_card(config, pool))

    async def health(request: Request) -> Response:
        stats = pool.chat.stats
        return JSONResponse(
            {
                "status": "ok",
                "model": config.model_id,
                "n_ctx": stats.n_ctx,
                "busy": pool.busy,
                "queued": pool.queued,
                "served": pool.served,
                "device": pool.chat.device,
            }
        )

    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request, config.limits)
        req = _parse(ChatRequest, body)
        req.check()
        _check_model(req.model, config)
        limits = config.limits
        if len(req.messages) > limits.max_messages:
            raise ApiError(
                413,
                f"too many messages: {len(req.messages)}, the limit is {limits.max_messages}",
                code="too_many_messages",
                param="messages",
            )
        turn = parse_messages(req.messages)
        pin = request.headers.get(SESSION_HEADER) or req.prompt_cache_key
        job_limit = _reply_limit(
            req.reply_limit, limits, "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        )
        bridge = _Bridge()
        job = Job(
            emit=bridge.emit,
            sampling=_sampling(config.sampling, req),
            max_tokens=job_limit,
            stop=req.stops(),
            turn=turn,
            pin=pin.strip() if pin else None,
        )
        return await _respond(request, pool, job, bridge, config, req.stream, _ChatShape(config.model_id, req))

    async def completions(request: Request) -> Response:
        body = await _json_body(request, config.limits)
        req = _parse(CompletionRequest, body)
        req.check()
        _check_model(req.model, config)
        bridge = _Bridge()
        job = Job(
            emit=bridge.emit,
            sampling=_sampling(config.sampling, req),
            max_tokens=_reply_limit(req.max_tokens, config.limits, "max_tokens"),
            stop=req.stops(),
            prompt=req.text(),
            kind="completion",
        )
        return await _respond(request, pool, job, bridge, config, req.stream, _TextShape(config.model_id, req))

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(ApiError(status, message, code="not_found" if status == 404 else "method_not_allowed"))

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(
            ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal")
        )

    routes = [
        Route("/health", guarded(health), methods=["GET"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{name:path}", guarded(model), methods=["GET"]),
        Route("/v1/chat/completions", guarded(chat_completions), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: crashed})


# -- requests ------------------------------------------------------------------------


def _authorize(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing API key: send it as 'Authorization: Bearer KEY'",
            type="authentication_error",
            code="invalid_api_key",
        )
    if not hmac.compare_digest(token.strip().encode("utf-8", "replace"), api_key.encode("utf-8")):
        raise ApiError(401, "incorrect API key", type="authentication_error", code="invalid_api_key")


async def _json_body(request: Request, limits: Limits) -> dict[str, Any]:
    """The body as a JSON object, read no further than the size limit."""
    limit = limits.max_body_bytes
    too_big = ApiError(413, f"the request body is larger than the limit of {limit} bytes", code="body_too_large")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "the request has no body: send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the body's JSON is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}", code="invalid_json")
    return body


def _parse(kind: type[_R], body: dict[str, Any]) -> _R:
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:
        raise ApiError(400, "the request is nested too deeply", code="invalid_value") from None


def _check_model(name: str, config: ServeConfig) -> None:
    if name not in config.aliases:
        raise _unknown_model(name, config)


def _unknown_model(name: str, config: ServeConfig) -> ApiError:
    shown = name if len(name) <= 80 else name[:77] + "..."
    return ApiError(
        404,
        f"the model {shown!r} does not exist here: this server runs {config.model_id!r} (see GET /v1/models)",
        code="model_not_found",
        param="model",
    )


def _reply_limit(asked: int | None, limits: Limits, param: str) -> int | None:
    if asked is None:
        return limits.default_max_tokens
    if asked > limits.max_tokens:
        raise ApiError(
            400,
            f"{param} is {asked}, more than this server's limit of {limits.max_tokens} tokens per reply",
            code="max_tokens_too_large",
            param=param,
        )
    return asked


def _sampling(base: SamplingSettings, req: Any) -> SamplingSettings:
    changes = {
        name: getattr(req, name)
        for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")
        if getattr(req, name) is not None
    }
    if req.seed is not None:
        changes["seed"] = req.seed % (2**32 - 1)
    if req.frequency_penalty:  # OpenAI's penalty, roughly as llama.cpp's repeat penalty
        changes.setdefault("repeat_penalty", 1.0 + max(0.0, req.frequency_penalty) / 2)
    return base.model_copy(update=changes) if changes else base


# -- responses -------------------------------------------------------------------------


class _Bridge:
    """Events from the worker thread into this request's asyncio queue."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(self, event: Event) -> None:
        with contextlib.suppress(RuntimeError):  # the server stopped meanwhile: nobody is listening
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def next(self, request: Request) -> Event | None:
        """The next event; None when the client disconnected meanwhile."""
        while True:
            try:
                return await asyncio.wait_for(self.queue.get(), 0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return None


class _ChatShape:
    def __init__(self, model: str, req: ChatRequest) -> None:
        self.model, self.id, self.created = model, new_id("chatcmpl"), now()
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": done.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": _usage(done),
            "sinkchat": done.facts.body(),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **extra,
        }

    def first(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": ""})

    def piece(self, text: str) -> dict[str, Any]:
        return self.chunk({"content": text})

    def last(self, done: Done) -> dict[str, Any]:
        return self.chunk({}, done.finish_reason, sinkchat=done.facts.body())

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": _usage(done),
        }


class _TextShape:
    def __init__(self, model: str, req: CompletionRequest) -> None:
        self.model, self.id, self.created = model, new_id("cmpl"), now()
        self.include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def _body(self, text: str, finish: str | None, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            **extra,
        }

    def whole(self, text: str, done: Done) -> dict[str, Any]:
        return self._body(text, done.finish_reason, usage=_usage(done), sinkchat=done.facts.body())

    def first(self) -> dict[str, Any] | None:
        return None

    def piece(self, text: str) -> dict[str, Any]:
        return self._body(text, None)

    def last(self, done: Done) -> dict[str, Any]:
        return self._body("", done.finish_reason, sinkchat=done.facts.body())

    def usage_chunk(self, done: Done) -> dict[str, Any]:
        return {**self._body("", None, usage=_usage(done)), "choices": []}


def _usage(done: Done) -> dict[str, Any]:
    facts: Facts = done.facts
    return usage(facts.prompt_tokens, done.completion_tokens, facts.reused_tokens)


async def _respond(
    request: Request,
    pool: ConversationPool,
    job: Job,
    bridge: _Bridge,
    config: ServeConfig,
    stream: bool,
    shape: _ChatShape | _TextShape,
) -> Response:
    pool.submit(job)
    try:
        first = await bridge.next(request)  # waits for the queue and the prompt: errors still get a status
    except asyncio.CancelledError:
        pool.cancel(job)
        raise
    if first is None:
        pool.cancel(job)
        return Response(status_code=499)
    if isinstance(first, Failed):
        return error_response(first.error)
    assert isinstance(first, Ready)
    headers = first.facts.headers()
    if stream:
        return EventSourceResponse(_events(request, pool, job, bridge, shape), headers=headers, ping=15)
    pieces: list[str] = []
    while True:
        event = await bridge.next(request)
        if event is None:
            pool.cancel(job)
            return Response(status_code=499)
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Failed):
            return error_response(event.error)
        elif isinstance(event, Done):
            headers = event.facts.headers()
            return JSONResponse(shape.whole("".join(pieces), event), headers=headers)


async def _events(
    request: Request, pool: ConversationPool, job: Job, bridge: _Bridge, shape: _ChatShape | _TextShape
) -> AsyncIterator[dict[str, str]]:
    finished = False
    try:
        first = shape.first()
        if first is not None:
            yield _sse(first)
        while True:
            event = await bridge.next(request)
            if event is None:
                return
            if isinstance(event, Piece):
                yield _sse(shape.piece(event.text))
            elif isinstance(event, Failed):
                finished = True
                yield _sse(event.error.body())
                return
            elif isinstance(event, Done):
                finished = True
                yield _sse(shape.last(event))
                if shape.include_usage:
                    yield _sse(shape.usage_chunk(event))
                yield {"data": "[DONE]"}
                return
    finally:
        if not finished:
            pool.cancel(job)


def _sse(payload: dict[str, Any]) -> dict[str, str]:
    return {"data": json.dumps(payload, ensure_ascii=False)}


def _model_card(config: ServeConfig, pool: ConversationPool) -> dict[str, Any]:
    return {
        "id": config.model_id,
        "object": "model",
        "created": config.created,
        "owned_by": "sinkchat",
        "sinkchat": {"n_ctx": pool.chat.n_ctx, "device": pool.chat.device, "can_chat": pool.chat.chat_problem is None},
    }
