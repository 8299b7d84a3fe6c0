"""The OpenAI wire format: requests validated at the boundary, responses and errors in OpenAI's shapes.

Requests are parsed strictly (a string where a number belongs is an error, as it is at
OpenAI), but fields sinkchat does not know are ignored, so newer clients keep working.
Features sinkchat cannot honour (tools, images, ``n`` > 1, log-probabilities) are refused
with a message that names them, never silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sinkchat.store.text import clean

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
"""sinkchat's finish reasons as OpenAI names them (a cancelled reply reaches no client)."""


class ApiError(Exception):
    """An error a client caused or must know about, answered as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def unsupported(what: str, param: str) -> ApiError:
    return ApiError(400, f"{what} is not supported by sinkchat", code="unsupported", param=param)


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    model: str
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, lt=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0, le=5.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    user: str | None = None
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        return [clean(s) or "" for s in stops]

    def check_common(self) -> None:
        if self.n not in (None, 1):
            raise unsupported("n > 1 (several choices per request)", "n")
        if self.logit_bias:
            raise unsupported("logit_bias", "logit_bias")

    def stops(self) -> list[str]:
        return [s for s in self.stop or [] if s]  # type: ignore[union-attr] - normalised by the validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    include_usage: bool = False


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None

    def text(self, index: int) -> str:
        """The message's text; parts other than text are refused by name."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return clean(self.content) or ""
        pieces = []
        for j, part in enumerate(self.content):
            if part.type != "text":
                what = {"image_url": "images", "input_audio": "audio input", "file": "files"}.get(part.type)
                raise unsupported(what or f"content of type {part.type!r}", f"messages.{index}.content.{j}")
            pieces.append(part.text or "")
        return clean("".join(pieces)) or ""


class ChatRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    prompt_cache_key: str | None = None

    def check(self) -> None:
        self.check_common()
        if self.tools or self.functions:
            raise unsupported("tools (function calling)", "tools" if self.tools else "functions")
        if self.tool_choice not in (None, "none", "auto"):
            raise unsupported("tool_choice", "tool_choice")
        if self.logprobs:
            raise unsupported("logprobs", "logprobs")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise unsupported(f"response_format {self.response_format.get('type')!r}", "response_format")
        if not self.messages:
            raise ApiError(400, "messages must hold at least one message", code="invalid_value", param="messages")

    @property
    def reply_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    """``POST /v1/completions``: raw continuation of a text, no chat template."""

    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for this endpoint
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    def check(self) -> None:
        self.check_common()
        if self.echo:
            raise unsupported("echo", "echo")
        if self.suffix:
            raise unsupported("suffix (fill in the middle)", "suffix")
        if self.logprobs:
            raise unsupported("logprobs", "logprobs")
        if self.best_of not in (None, 1):
            raise unsupported("best_of > 1", "best_of")
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise unsupported("several prompts in one request", "prompt")

    def text(self) -> str:
        prompt = self.prompt[0] if isinstance(self.prompt, list) else self.prompt
        return clean(prompt) or ""


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _field_path(loc: tuple[Any, ...]) -> str:
    """A pydantic location without its union-branch tags: ``messages.0.content``, not ``...content.str``."""
    parts = [
        str(p) for p in loc if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p or p.startswith("function-")))
    ]
    return ".".join(parts)


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, as one OpenAI-style line naming the field."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    where = _field_path(first["loc"]) or None
    if first["type"] == "missing":
        return ApiError(400, f"missing required parameter: {where!r}", code="missing", param=where)
    # A union (a string or a list ...) fails once per branch: say them together.
    wanted = list(
        dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errors if _field_path(e["loc"]) == (where or ""))
    )
    message = " or ".join(m.removeprefix("Input should be ") for m in wanted)
    if len(wanted) > 1 or wanted[0].startswith("Input should be "):
        message = "should be " + message
    if where:
        got = repr(first.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        message = f"invalid value for {where!r}: {message} (got {got})"
    return ApiError(400, message, code="invalid_value", param=where)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


_Request.model_rebuild()
ChatRequest.model_rebuild()
CompletionRequest.model_rebuild()
