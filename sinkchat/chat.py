"""``Chat``: the session manager, and sinkchat's Python API.

It holds the conversation, appends each new turn's tokens to the cache incrementally,
streams replies and keeps the cache a well-formed chat under a fixed ``n_ctx``::

    from sinkchat import Chat
    chat = Chat.load(n_ctx=2048)            # the embedded default model
    for piece in chat.send("Hello!"):
        print(piece, end="")
    print(chat.stats)

One reply runs at a time; ``cancel()`` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.default_model import INSTALL_HINT, default_model_path
from models.errors import ModelFileError
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions
from models.sampler import Sampler, SamplingSettings
from sinkchat.config import MIN_WINDOW, SinkSettings
from sinkchat.engine import SinkEngine
from sinkchat.errors import BusyError, ContextTooSmallError
from sinkchat.layout import Role
from sinkchat.policy import SinkPolicy
from sinkchat.stats import ChatStats, process_rss
from sinkchat.text_stream import StopMatcher, Utf8Joiner
from sinkchat.turns import Message, TurnRenderer

log = logging.getLogger(__name__)

FinishReason = Literal["eos", "stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class ReplyInfo:
    """How the last reply (or raw generation) ended."""

    finish_reason: FinishReason
    n_tokens: int
    prompt_tokens: int
    seconds: float
    prompt_seconds: float

    @property
    def tokens_per_second(self) -> float | None:
        return self.n_tokens / self.seconds if self.seconds > 0 and self.n_tokens else None

    @property
    def prompt_tokens_per_second(self) -> float | None:
        return self.prompt_tokens / self.prompt_seconds if self.prompt_seconds > 0 and self.prompt_tokens else None


def resolve_model_path(model: str | Path | None) -> Path:
    """The given path, or the embedded default model; a clear error when there is none."""
    if model is not None:
        return Path(model).expanduser()
    path = default_model_path()
    if path is None:
        raise ModelFileError(
            f"no model given and the embedded default model is not installed.\nInstall it: {INSTALL_HINT}"
        )
    return path


class Chat:
    """A conversation with a local model in a fixed-size, sink-preserving KV cache."""

    def __init__(
        self,
        model: LlamaModel,
        context: LlamaContext,
        *,
        sinks: SinkSettings | None = None,
        system_prompt: str | None = None,
        sampling: SamplingSettings | None = None,
        n_ctx: int | None = None,
        owns_model: bool = True,
    ) -> None:
        self.model = model
        self.context = context
        self.sinks = sinks or SinkSettings()
        self.sampling = sampling or SamplingSettings()
        self.n_ctx = n_ctx or context.options.n_ctx
        self._owns_model = owns_model
        if model.n_ctx_train and self.n_ctx > model.n_ctx_train:
            log.warning(
                "n_ctx=%d is beyond the %d positions %s was trained on; replies may degrade",
                self.n_ctx,
                model.n_ctx_train,
                model.name,
            )
        self._can_shift = context.can_shift  # read once: stats must not call into llama.cpp from other threads
        self._turns = TurnRenderer(model.chat_template().render)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self.last_reply: ReplyInfo | None = None
        self._live: tuple[float, int] | None = None
        """(start time, tokens so far) of the reply being generated, for a live tok/s."""
        self.messages: list[Message] = []
        self.system_prompt: str | None = None
        self.reset(system_prompt)

    @classmethod
    def load(
        cls,
        model: str | Path | None = None,
        *,
        n_ctx: int = 4096,
        sink_tokens: int = 4,
        system_prompt: str | None = None,
        keep_system_prompt: bool = True,
        discard: int | None = None,
        sampling: SamplingSettings | dict[str, Any] | None = None,
        **llama_options: Any,
    ) -> Chat:
        """Load a GGUF model (default: the embedded SmolLM2) and start a chat.

        ``llama_options`` are :class:`models.options.LoadOptions` fields: ``n_gpu_layers``,
        ``n_threads``, ``flash_attn``, ``type_k``, ``type_v``, ``n_batch`` ...
        """
        options = LoadOptions(n_ctx=n_ctx, **llama_options)
        sinks = SinkSettings(sink_tokens=sink_tokens, keep_system_prompt=keep_system_prompt, discard=discard)
        if isinstance(sampling, dict):
            sampling = SamplingSettings(**sampling)
        llama_model = LlamaModel(
            resolve_model_path(model), n_gpu_layers=options.n_gpu_layers, use_mmap=options.use_mmap
        )
        try:
            context = LlamaContext(llama_model, options)
        except BaseException:
            llama_model.close()
            raise
        try:
            return cls(llama_model, context, sinks=sinks, system_prompt=system_prompt, sampling=sampling)
        except BaseException:
            context.close()
            llama_model.close()
            raise

    # -- state ---------------------------------------------------------------------------

    def reset(self, system_prompt: str | None = None) -> None:
        """Start a new conversation (optionally with another system prompt) in the same cache."""
        with self._exclusive():
            opening = self._turns.opening(system_prompt)
            tokens = self._tokenize(opening, first=True, content=system_prompt)
            starts_with_bos = tokens[0] == self.model.bos if tokens else self.model.add_bos
            pin_target = self.sinks.sink_tokens + (1 if starts_with_bos else 0)
            # The template's own default system prompt (if it injects one) is pinned like a given one.
            pin = self.sinks.keep_system_prompt and bool(opening)
            pinned = max(len(tokens) if pin else 0, pin_target)
            if self.n_ctx - pinned < MIN_WINDOW:
                what = "the system prompt and sink tokens take" if pin else "the sink tokens take"
                room = f"leaving only {self.n_ctx - pinned}" if self.n_ctx > pinned else "leaving no room"
                raise ContextTooSmallError(
                    f"{what} {pinned} tokens, {room} of n_ctx={self.n_ctx} for the chat; "
                    f"use n_ctx of at least {pinned + MIN_WINDOW}"
                    + (" or do not keep the system prompt pinned" if pin else "")
                )
            self.context.clear()
            policy = SinkPolicy(discard=self.sinks.discard)
            self.engine = SinkEngine(self.context, policy, capacity=self.n_ctx, pin_target=pin_target)
            self._group = 0
            if tokens:
                self.engine.feed(tokens, "system", 0, pin=pin, logits=False)
            self.system_prompt = system_prompt
            self.messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
            self.last_reply = None

    @property
    def stats(self) -> ChatStats:
        """A snapshot of the cache numbers; cheap, and safe to read from any thread."""
        engine, reply, live = self.engine, self.last_reply, self._live
        shift = engine.last_shift_seconds
        if live is not None and live[1]:
            tokens_per_second: float | None = live[1] / max(time.perf_counter() - live[0], 1e-9)
        else:
            tokens_per_second = reply.tokens_per_second if reply else None
        return ChatStats(
            n_ctx=self.n_ctx,
            n_cached=engine.n_cached,
            n_pinned=engine.layout.n_pinned,
            shifts=engine.shifts,
            evicted_tokens=engine.evicted_tokens,
            fallbacks=engine.fallbacks,
            can_shift=self._can_shift,
            tokens_per_second=tokens_per_second,
            prompt_tokens_per_second=reply.prompt_tokens_per_second if reply else None,
            last_shift_ms=shift * 1000 if shift is not None else None,
            rss_bytes=process_rss(),
        )

    def cancel(self) -> None:
        """Stop the running reply after the current token (thread-safe); its text so far is kept."""
        self._cancel.set()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    # -- chatting ------------------------------------------------------------------------

    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        """Add a user message and stream the assistant's reply in text pieces.

        The reply stops at the end-of-turn token, a stop string, ``max_tokens`` or
        ``cancel()``; in every case the turn is closed in the cache the way the template
        closes it, so the next turn follows a well-formed chat.  If cancelled while the
        prompt is still being read, the message is dropped and nothing is yielded.
        """
        with self._exclusive():
            self._cancel.clear()
            group = self._group + 1
            turn = self._turns.user(self.messages, text)
            user_tokens = self._tokenize(turn.message, first=not self.engine.tokens, content=text)
            opening = self._tokenize(turn.generation_prompt)
            started, start_n = time.perf_counter(), self.engine.n_cached
            if not self.engine.feed(user_tokens, "user", group, logits=not opening, cancel=self._cancel):
                self._undo(group, start_n)
                self.last_reply = ReplyInfo("cancelled", 0, 0, 0.0, time.perf_counter() - started)
                return
            self._group = group
            self.messages.append({"role": "user", "content": text})
            self.engine.feed(opening, "assistant", group)
            prompt_seconds = time.perf_counter() - started
            pieces: list[str] = []
            try:
                yield from self._stream(
                    "assistant", group, pieces, max_tokens, stop, True, len(user_tokens) + len(opening), prompt_seconds
                )
            finally:
                reply = "".join(pieces)
                self.messages.append({"role": "assistant", "content": reply})
                closing = self._tokenize(self._turns.closing(self.messages[:-1]))
                self.engine.feed(closing, "assistant", group, logits=False)

    def generate(self, prompt: str, *, max_tokens: int | None = None, stop_at_eos: bool = True) -> Iterator[str]:
        """Continue raw text without a chat template (the seeds' endless-generation experiment).

        With ``stop_at_eos=False`` the end-of-text token is fed back and generation goes on.
        """
        with self._exclusive():
            self._cancel.clear()
            group = self._group + 1
            tokens = self._tokenize(prompt, first=not self.engine.tokens, parse_special=False)
            if not tokens and not self.engine.tokens:
                if self.model.bos < 0:
                    raise ValueError("an empty prompt needs a model with a BOS token")
                tokens = [self.model.bos]
            started = time.perf_counter()
            self._group = group
            if tokens:
                self.engine.feed(tokens, "raw", group, cancel=self._cancel)
            prompt_seconds = time.perf_counter() - started
            yield from self._stream("raw", group, [], max_tokens, (), stop_at_eos, len(tokens), prompt_seconds)

    # -- internals -----------------------------------------------------------------------

    def _stream(
        self,
        role: Role,
        group: int,
        pieces: list[str],
        max_tokens: int | None,
        stop: Sequence[str],
        stop_at_eos: bool,
        prompt_tokens: int,
        prompt_seconds: float,
    ) -> Iterator[str]:
        """The decode loop: sample, make room, decode, emit complete characters."""
        sampler = Sampler(self.sampling, self.model.n_vocab)
        joiner, stops = Utf8Joiner(), StopMatcher(stop)
        finish: FinishReason = "length"
        n = 0
        started = time.perf_counter()
        try:
            while max_tokens is None or n < max_tokens:
                if self._cancel.is_set():
                    finish = "cancelled"
                    break
                token = sampler.sample(self.context)
                if stop_at_eos and self.model.is_eog(token):
                    finish = "eos"
                    break
                self.engine.feed([token], role, group)
                n += 1
                self._live = (started, n)
                text, hit = stops.push(joiner.push(self.model.token_to_piece(token)))
                if text:
                    pieces.append(text)
                    yield text
                if hit:
                    finish = "stop"
                    break
            if finish != "stop":
                text, _ = stops.push(joiner.flush())
                tail = text + stops.flush()
                if tail:
                    pieces.append(tail)
                    yield tail
        except BaseException:  # closed early, Ctrl-C, or a decode error: the reply ends here
            finish = "cancelled"
            raise
        finally:
            sampler.close()
            self._live = None
            self.last_reply = ReplyInfo(finish, n, prompt_tokens, time.perf_counter() - started, prompt_seconds)

    def _tokenize(
        self, text: str, *, first: bool = False, parse_special: bool = True, content: str | None = None
    ) -> list[int]:
        """Template text to tokens; BOS is added only at the very start, and only if the template did not.

        ``content`` is the part of ``text`` that a person typed: it is read literally, so
        a pasted ``<|im_end|>`` stays text and cannot break the chat's structure.
        """
        if not text:
            return []
        add_bos = first and self.model.add_bos and not text.startswith(self.model.token_text(self.model.bos))
        at = text.find(content) if content and parse_special else -1
        if at < 0:
            return self.model.tokenize(text, add_special=add_bos, parse_special=parse_special)
        head, tail = text[:at], text[at + len(content) :]
        return (
            (self.model.tokenize(head, add_special=add_bos) if head or add_bos else [])
            + self.model.tokenize(content, parse_special=False)
            + (self.model.tokenize(tail) if tail else [])
        )

    def _undo(self, group: int, start_n: int) -> None:
        """Remove a user message whose reading was cancelled (older evicted turns stay evicted)."""
        group_start = self.engine.layout.group_start(group)
        self.engine.truncate(min(start_n, group_start if group_start is not None else start_n))

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise BusyError("a reply is still being generated; cancel it first")
        try:
            yield
        finally:
            self._lock.release()

    def close(self) -> None:
        """Free the context (and the model, when this chat loaded it)."""
        self.context.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
