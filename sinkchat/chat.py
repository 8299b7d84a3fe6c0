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

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.chat_template import ChatTemplate
from models.default_model import INSTALL_HINT, default_model_path
from models.device import describe_placement
from models.errors import ModelFileError
from models.fit import check_context
from models.gguf_meta import read_gguf
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions
from models.sampler import Sampler, SamplingSettings
from models.swa import choose_swa_full
from models.templates import resolve as resolve_template
from sinkchat.chat_format import ChatFormat, ChatFormatError, Span, UserTurn
from sinkchat.config import MIN_WINDOW, SinkSettings
from sinkchat.engine import SinkEngine
from sinkchat.errors import BusyError, ContextTooSmallError, NoChatTemplateError, SinkchatError
from sinkchat.layout import CacheLayout, Role, Segment
from sinkchat.policy import SinkPolicy
from sinkchat.snapshot import CacheState, SegmentState
from sinkchat.stats import ChatStats, process_rss
from sinkchat.text_stream import StopMatcher, Utf8Joiner
from sinkchat.turns import Message, alternates

log = logging.getLogger(__name__)

KEEP: Any = object()
"""Marker for "leave as it is" in :meth:`Chat.rebuild`."""

FinishReason = Literal["eos", "stop", "length", "cancelled"]


@dataclass(frozen=True, slots=True)
class ReplyInfo:
    """How the last reply (or raw generation) ended."""

    finish_reason: FinishReason
    n_tokens: int
    prompt_tokens: int
    seconds: float
    prompt_seconds: float
    n_context: int = 0
    """Tokens in the cache when the reply began: the whole prompt as the model saw it."""

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
            f"no model given and the embedded default model is not installed; install it: {INSTALL_HINT}"
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
        template: ChatTemplate | None = None,
    ) -> None:
        """``template`` overrides the model's own chat template (``--chat-template``)."""
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
        self.device = describe_placement(model.n_gpu_layers, model.n_layer)
        """Where the model runs, e.g. ``CPU`` or ``CUDA0 · 30/30 layers``."""
        self._can_shift = context.can_shift  # read once: stats must not call into llama.cpp from other threads
        self.template = template or model.chat_template()
        """The chat template in use; None for a base model without one."""
        self.template_spec: str | None = None
        """The ``chat_template`` this chat was loaded with (a name or file), None for the model's own."""
        self.format: ChatFormat | None = None
        """How the template lays out turns; None when the model cannot chat turn by turn (see ``chat_problem``)."""
        self.chat_problem: str | None = None
        """Why ``send`` is refused (a base model, an unusable template); ``generate`` still works."""
        self.notes: list[str] = []
        """What sinkchat decided for this model that a user should know (SWA cache, system prompt placement)."""
        if self.template is None:
            self.chat_problem = (
                f"{model.name} has no chat template: it looks like a base model, which continues text "
                "rather than chatting. Give a template with --chat-template NAME|FILE to chat with it anyway."
            )
        else:
            try:
                self.format = ChatFormat(self.template.render)
                self.format.check()
                self.notes += self.format.notes
            except ChatFormatError as exc:
                self.format = None
                self.chat_problem = (
                    f"the chat template of {model.name} ({self.template.name}) cannot be used: {exc}. "
                    "Give another with --chat-template NAME|FILE."
                )
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._doing = ""
        """What holds the lock, in words, for the busy state and a truthful :class:`BusyError`."""
        self._task: tuple[int, int] | None = None
        """``(fed_tokens at the start, total)`` of a read whose size is known, for its progress."""
        self.last_reply: ReplyInfo | None = None
        self._live: tuple[float, int] | None = None
        """(start time, tokens so far) of the reply being generated, for a live tok/s."""
        self.messages: list[Message] = []
        self.system_prompt: str | None = None
        self.rebuilds = 0
        """How many times the cache was refilled from the messages (a server reports it per request)."""
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
        chat_template: str | Path | None = None,
        **llama_options: Any,
    ) -> Chat:
        """Load a GGUF model (default: the embedded SmolLM2) and start a chat.

        ``chat_template`` replaces the model's own template: a file, or a name from
        ``models.templates`` (``chatml``, ``llama-3.2``, ``gemma-3`` ...).
        ``llama_options`` are :class:`models.options.LoadOptions` fields: ``n_gpu_layers``,
        ``n_threads``, ``flash_attn``, ``type_k``, ``type_v``, ``n_batch`` ...
        """
        options = LoadOptions(n_ctx=n_ctx, **llama_options)
        sinks = SinkSettings(sink_tokens=sink_tokens, keep_system_prompt=keep_system_prompt, discard=discard)
        template_source = resolve_template(chat_template) if chat_template is not None else None  # before the weights
        if isinstance(sampling, dict):
            sampling = SamplingSettings(**sampling)
        path = resolve_model_path(model)
        info = read_gguf(path)  # the header: a bad file or a context too large fails before any loading
        swa = None
        if options.swa_full is None:
            swa = choose_swa_full(
                info,
                n_ctx,
                n_ubatch=options.n_ubatch or options.n_batch,
                type_k=options.type_k,
                type_v=options.type_v,
                flash_attn=options.flash_attn != "off",
            )
            options = options.model_copy(update={"swa_full": swa.swa_full})
        check_context(info, options, n_gpu_layers=options.n_gpu_layers)
        llama_model = LlamaModel(path, n_gpu_layers=options.n_gpu_layers, use_mmap=options.use_mmap)
        try:
            context = LlamaContext(llama_model, options)
        except BaseException:
            llama_model.close()
            raise
        try:
            template = None
            if template_source is not None:
                template = llama_model.chat_template(source=template_source[1], name=template_source[0])
            chat = cls(
                llama_model, context, sinks=sinks, system_prompt=system_prompt, sampling=sampling, template=template
            )
            chat.template_spec = str(chat_template) if chat_template is not None else None
            if swa is not None and swa.window is not None:
                chat.notes.insert(0, swa.reason)
            if llama_model.gpu_notice:
                chat.notes.append(llama_model.gpu_notice)
            return chat
        except BaseException:
            context.close()
            llama_model.close()
            raise

    # -- state ---------------------------------------------------------------------------

    def reset(self, system_prompt: str | None = None, *, raw: bool = False, read: bool = True) -> None:
        """Start a new conversation (optionally with another system prompt) in the same cache.

        ``raw``: an empty cache for :meth:`generate`, without the template's opening (the
        first sink tokens of the text are pinned).  ``read=False`` lays out the opening
        without evaluating it, for :meth:`restore`, which loads it with the rest.
        """
        with self._exclusive("starting a new chat"):
            keep, fmt = self.sinks.keep_system_prompt, None if raw else self.format
            opening = fmt.opening(system_prompt, pin_system=keep) if fmt else None
            spans, folds = (list(opening.spans), opening.folds) if opening else ([], False)
            tokens = self._span_tokens(spans, first=True)
            starts_with_bos = tokens[0] == self.model.bos if tokens else self.model.add_bos
            pin_target = self.sinks.sink_tokens + (1 if starts_with_bos and self.sinks.pin_bos else 0)
            if fmt is not None and not folds and len(tokens) < pin_target:
                # Sinks never reach into a message: a short opening takes the first turn's opening markup
                # (dropped from later turns when they become the oldest), and only that much is pinned.
                spans.append((fmt.user_open, False))
                folds, tokens = True, self._span_tokens(spans, first=True)
            if fmt is not None:
                pin_target = min(pin_target, len(tokens))
            # The template's own default system prompt (if it injects one) is pinned like a given one.
            pin = bool(tokens) and (keep or folds)
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
            policy = SinkPolicy(discard=self.sinks.discard, aligned=self.sinks.aligned)
            self.engine = SinkEngine(self.context, policy, capacity=self.n_ctx, pin_target=pin_target)
            self._group = 0
            self._first_group: int | None = None
            self._opening_len = len(tokens)
            self._folds = folds
            """The pins end with the first user turn's opening (and the folded system prompt)."""
            self._system_in_first_turn = bool(system_prompt and self.format and self.format.folds_system and not keep)
            """The folded system prompt is not pinned: it goes into the chat's first user turn."""
            if tokens and read:
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
            reread_tokens=engine.reread_tokens,
            rereading=engine.rereading,
            activity=self._doing or None,
            progress=(min(engine.fed_tokens - task[0], task[1]), task[1]) if (task := self._task) else None,
            can_shift=self._can_shift,
            tokens_per_second=tokens_per_second,
            prompt_tokens_per_second=reply.prompt_tokens_per_second if reply else None,
            last_shift_ms=shift * 1000 if shift is not None else None,
            rss_bytes=process_rss(),
        )

    @property
    def template_digest(self) -> str:
        """Identity of the chat template in use ("" for none): a snapshot's turns were laid out by it."""
        if self.template is None:
            return ""
        return hashlib.sha256(self.template.source.encode("utf-8")).hexdigest()[:16]

    @property
    def model_name(self) -> str:
        return self.model.name

    def cancel(self) -> None:
        """Stop the running reply after the current token (thread-safe); its text so far is kept."""
        self._cancel.set()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def generated_tokens(self) -> int:
        """Tokens of the reply being generated so far (0 between replies)."""
        live = self._live
        return live[1] if live else 0

    # -- chatting ------------------------------------------------------------------------

    def send(self, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        """Add a user message and stream the assistant's reply in text pieces.

        The reply stops at the end-of-turn token, a stop string, ``max_tokens`` or
        ``cancel()``; in every case the turn is closed in the cache the way the template
        closes it, so the next turn follows a well-formed chat.  If cancelled while the
        prompt is still being read, the message is dropped and nothing is yielded.
        """
        with self._exclusive("reading your message"):
            self._cancel.clear()
            group = self._group + 1
            started, start_n = time.perf_counter(), self.engine.n_cached
            n_prompt = self._feed_user(group, text, cancel=self._cancel, progress=True)
            self._doing, self._task = "replying", None
            if n_prompt is None:
                self.engine.truncate(min(start_n, self._group_cache_start(group)))
                self.last_reply = ReplyInfo("cancelled", 0, 0, 0.0, time.perf_counter() - started)
                return
            self._group = group
            self.messages.append({"role": "user", "content": text})
            yield from self._reply(group, max_tokens, stop, n_prompt, time.perf_counter() - started)

    def regenerate(self, *, max_tokens: int | None = None, stop: Sequence[str] = ()) -> Iterator[str]:
        """Replace the last reply with a new one, streamed like :meth:`send`.

        The old reply is removed from the cache.  If it had outgrown the window and pushed
        its question out, the question is read again.
        """
        with self._exclusive("replying"):
            if len(self.messages) < 2 or self.messages[-1]["role"] != "assistant":
                raise SinkchatError("there is no reply to regenerate yet")
            self._cancel.clear()
            group, started = self._group, time.perf_counter()
            self.messages.pop()
            text = self.messages[-1]["content"]
            found = self.engine.layout.find("assistant", group)
            if found is not None and not found[1].cut:
                self.engine.truncate(found[0])
                prompt = self._tokenize(self._chat_format().generation)
                self.engine.feed(prompt, "assistant", group)
                n_prompt: int | None = len(prompt)
            else:
                self.engine.truncate(self._group_cache_start(group))
                n_prompt = self._feed_user(group, text)
            yield from self._reply(group, max_tokens, stop, n_prompt or 0, time.perf_counter() - started)

    def score_replies(self, question: str, replies: Sequence[str]) -> list[float]:
        """Log-probability of each candidate reply to ``question``, teacher-forced: nothing is generated.

        The question is read as the next user message, each reply's tokens are scored after
        it, and then everything is undone: the KV cache comes back bit for bit, and so do the
        layout and the conversation.  This is how a probe asks what the model still knows
        without leaving a trace in the chat.  Room for the longest reply is made once, so every
        candidate is scored against the same cache.
        """
        import copy

        with self._exclusive("scoring replies"):
            engine = self.engine
            if engine.shift_pending:
                raise SinkchatError("a context shift is not applied yet; replies cannot be scored now")
            kv = self.context.save_state()
            saved = (
                copy.deepcopy(engine.layout),
                list(engine.tokens),
                (engine.shifts, engine.evicted_tokens, engine.fallbacks, engine.reread_tokens, engine.fed_tokens),
                self._group,
                self._first_group,
                list(self.messages),
            )
            try:
                group = self._group + 1
                candidates = [self._tokenize(reply, literal=True) or [self.model.eos] for reply in replies]
                longest = max((len(c) for c in candidates), default=1)
                if longest - 1 > engine.chunk_size():
                    raise SinkchatError(f"a reply of {longest} tokens is too long to score in this cache")
                self._feed_user(group, question, logits=True)
                first = self.context.logits(-1)
                engine.make_room(longest, group)
                scores = engine.score_continuations(first, candidates, "assistant", group)
                return scores
            finally:
                self.context.load_state(kv)
                layout, tokens, counters, self._group, self._first_group, self.messages = saved
                engine.layout, engine.tokens = layout, tokens
                engine.shifts, engine.evicted_tokens, engine.fallbacks, engine.reread_tokens, engine.fed_tokens = (
                    counters
                )
                engine.shift_pending = False

    def read_exchange(self, user: str, reply: str) -> tuple[list[int], Any]:
        """Add one finished exchange, the reply teacher-forced; its tokens and the logits that predicted each.

        The reply is read the way a live chat writes it (after the reply's opening, then
        closed by :meth:`_close_reply`), so a replayed transcript leaves the cache a live
        chat would have, evictions included.  Row ``i`` of the logits is what the model
        expected in place of token ``i``: the paired quality bench scores a fixed reply
        under each cache policy with them.
        """
        import numpy as np

        if self.messages and self.messages[-1]["role"] == "user":
            raise SinkchatError("the last message has no reply yet; finished exchanges cannot follow it")
        with self._exclusive("reading the history"):
            group = self._group + 1
            self._feed_user(group, user)
            self._group = group
            self.messages.append({"role": "user", "content": user})
            targets = self._tokenize(reply, literal=True)
            rows = [self.context.logits(-1)[None]]
            if len(targets) > 1:
                rows.append(self.engine.feed_logits(targets[:-1], "assistant", group))
            if targets:  # the last token predicts nothing that is scored
                self.engine.feed(targets[-1:], "assistant", group, logits=False)
            self.messages.append({"role": "assistant", "content": reply})
            self._close_reply(group, reply)
            return targets, np.concatenate(rows)[: len(targets)]

    def rewind(self, exchanges: int) -> None:
        """Forget the last ``exchanges`` exchanges, to go on from an earlier point (an edited message).

        The cache is cut back where those exchanges began; if the first of them was already
        evicted, the cache is refilled from what remains (:meth:`rebuild`).
        """
        with self._exclusive("going back in the chat"):
            system = [m for m in self.messages if m["role"] == "system"]
            history = [m for m in self.messages if m["role"] != "system"]
            if not 1 <= exchanges <= len(history) // 2:
                raise SinkchatError(f"cannot go back {exchanges} exchanges in a chat of {len(history) // 2}")
            first = self._group - exchanges + 1
            start = self.engine.layout.group_start(first)
            self.messages = system + history[: len(history) - 2 * exchanges]
            if start is not None:
                self.engine.truncate(self._group_cache_start(first))
                self._group = first - 1
                if self._first_group is not None and self._first_group >= first:
                    self._first_group = None
                self.last_reply = None
                return
        self.rebuild()

    def rebuild(self, system_prompt: str | None | object = KEEP) -> int:
        """Refill the cache from the conversation: pins first, then the newest whole exchanges that fit.

        Used when the pinned prefix changes (a new system prompt) or the cache was lost.
        The full history stays in :attr:`messages`; about a quarter of the window is left
        free for the next turn.  Returns how many exchanges are cached.
        """
        history = [m for m in self.messages if m["role"] != "system"]
        system = self.system_prompt if system_prompt is KEEP else system_prompt
        return self._refill(history, system, self.engine)  # type: ignore[arg-type]

    def append_history(self, messages: Sequence[Message]) -> None:
        """Add finished exchanges (user/assistant pairs) after the last one, reading only them.

        For a client that brings turns the cache has not seen (an API client's own
        history).  When they would not fit in the window anyway, the cache is refilled
        with the newest exchanges that fit instead (:meth:`rebuild`): a long history is
        never read only to be evicted.
        """
        self._check_pairs(messages)
        if self.messages and self.messages[-1]["role"] == "user":
            raise SinkchatError("the last message has no reply yet; finished exchanges cannot follow it")
        added = [{"role": m["role"], "content": m["content"]} for m in messages]
        with self._exclusive("reading the history"):
            budget, used = self.engine.layout.window * 3 // 4, 0
            for i in range(len(added) - 2, -1, -2):
                used += len(self._exchange_tokens(added[i]["content"], added[i + 1]["content"]))
                if used > budget:
                    break
            else:
                self._reading(used)
                for i in range(0, len(added) - 1, 2):
                    self._append_exchange(self._group + 1, added[i]["content"], added[i + 1]["content"])
                    self._group += 1
                    self.messages += added[i : i + 2]
                return
            self.messages += added
        self.rebuild()

    def load_history(self, messages: Sequence[Message], system_prompt: str | None = None) -> int:
        """Replace the conversation with saved ``messages`` (user/assistant pairs) and rebuild the cache.

        Returns how many exchanges are cached (the newest that fit).
        """
        self._check_pairs(messages)
        return self._refill([{"role": m["role"], "content": m["content"]} for m in messages], system_prompt, None)

    def _refill(self, history: list[Message], system_prompt: str | None, counters: SinkEngine | None) -> int:
        """The cache holds the pins and the newest exchanges of ``history`` that fit; ``counters`` carry on."""
        self.reset(system_prompt)
        with self._exclusive("re-reading the history"):
            self.rebuilds += 1
            engine = self.engine  # the counters belong to the conversation, not to this cache refill
            if counters is not None:
                engine.shifts, engine.evicted_tokens = counters.shifts, counters.evicted_tokens
                engine.fallbacks, engine.reread_tokens = counters.fallbacks, counters.reread_tokens
            base = list(self.messages)
            pairs = [(history[i]["content"], history[i + 1]["content"]) for i in range(0, len(history) - 1, 2)]
            # Newest first, only as far back as fits: a days-long history is not tokenized whole.
            budget, used, first = self.engine.layout.window * 3 // 4, 0, len(pairs)
            while first > 0:
                cost = len(self._exchange_tokens(*pairs[first - 1]))
                if used + cost > budget:
                    break
                used, first = used + cost, first - 1
            self._reading(used)
            for group, (user, reply) in enumerate(pairs[first:], start=first + 1):
                self._append_exchange(group, user, reply)
            self.messages = base + history
            self._group = len(pairs)
            return len(pairs) - first

    def capture(self) -> tuple[CacheState, bytes]:
        """The cache's bookkeeping and KV bytes, for a snapshot (see :meth:`restore`)."""
        with self._exclusive("saving the cache"):
            engine, layout = self.engine, self.engine.layout
            if engine.shift_pending:
                raise SinkchatError("a context shift is not applied yet; the cache cannot be saved now")
            state = CacheState(
                tokens=list(engine.tokens),
                pin_target=layout.pin_target,
                n_pinned=layout.n_pinned,
                segments=[
                    SegmentState(role=s.role, group=s.group, n_tokens=s.n_tokens, cut=s.cut, opener=s.opener)
                    for s in layout.segments
                ],
                group=self._group,
                first_group=self._first_group,
                opening_len=self._opening_len,
                shifts=engine.shifts,
                evicted_tokens=engine.evicted_tokens,
            )
            return state, self.context.save_state()

    def restore(self, state: CacheState, kv: bytes, messages: Sequence[Message], system_prompt: str | None) -> int:
        """Continue from a snapshot: load the KV bytes, then read only the messages it does not cover.

        ``messages`` is the whole saved conversation (without the system message); the
        snapshot covers its first ``state``-many exchanges.  Returns how many tokens had
        to be evaluated (0 when the snapshot was up to date).  Raises when the bytes do
        not fit this context; the chat is then empty, and :meth:`load_history` rebuilds.
        """
        self._check_pairs(messages)
        self.reset(system_prompt, read=False)
        with self._exclusive("restoring the cache"):
            layout = CacheLayout(capacity=self.n_ctx, pin_target=state.pin_target, n_pinned=state.n_pinned)
            layout.segments = [Segment(s.role, s.group, s.n_tokens, s.cut, s.opener) for s in state.segments]
            if layout.n_cached != len(state.tokens) or layout.n_cached > self.n_ctx:
                raise SinkchatError("the snapshot's layout does not match its tokens")
            try:
                self.context.load_state(kv)
                if self.context.pos_max() != len(state.tokens) - 1:
                    raise SinkchatError(
                        f"the restored cache holds positions up to {self.context.pos_max()}, "
                        f"not {len(state.tokens) - 1}"
                    )
            except BaseException:
                self.context.clear()
                raise
            engine = self.engine
            engine.layout, engine.tokens = layout, list(state.tokens)
            engine.shifts, engine.evicted_tokens = state.shifts, state.evicted_tokens
            self._group, self._first_group, self._opening_len = state.group, state.first_group, state.opening_len
            covered = 2 * state.group
            seen = list(self.messages) + [{"role": m["role"], "content": m["content"]} for m in messages[:covered]]
            before = engine.n_cached + engine.evicted_tokens
            rest = messages[covered:]
            for i in range(0, len(rest) - 1, 2):
                self._append_exchange(self._group + 1, rest[i]["content"], rest[i + 1]["content"])
                self._group += 1
            self.messages = seen + [{"role": m["role"], "content": m["content"]} for m in rest]
            return engine.n_cached + engine.evicted_tokens - before

    @staticmethod
    def _check_pairs(messages: Sequence[Message]) -> None:
        if not alternates([m["role"] for m in messages]):
            raise SinkchatError("saved messages must alternate user, assistant, starting with a user message")

    def generate(self, prompt: str, *, max_tokens: int | None = None, stop_at_eos: bool = True) -> Iterator[str]:
        """Continue raw text without a chat template (the seeds' endless-generation experiment).

        With ``stop_at_eos=False`` the end-of-text token is fed back and generation goes on.
        """
        with self._exclusive("continuing the text"):
            self._cancel.clear()
            group = self._group + 1
            tokens = self._tokenize(prompt, first=not self.engine.tokens, literal=True)
            if not tokens and not self.engine.tokens:
                if self.model.bos < 0:
                    raise ValueError("an empty prompt needs a model with a BOS token")
                tokens = [self.model.bos]
            started = time.perf_counter()
            self._group = group
            if self._first_group is None:
                self._first_group = group
            if tokens:
                self.engine.feed(tokens, "raw", group, cancel=self._cancel)
            prompt_seconds = time.perf_counter() - started
            yield from self._stream("raw", group, [], max_tokens, (), stop_at_eos, len(tokens), prompt_seconds)

    # -- internals -----------------------------------------------------------------------

    def _chat_format(self) -> ChatFormat:
        if self.format is None:
            raise NoChatTemplateError(self.chat_problem or "this model cannot chat")
        return self.format

    def _has_exchange(self) -> bool:
        return any(seg.role != "system" for seg in self.engine.layout.segments)

    def _turn(self, group: int, text: str) -> UserTurn:
        """The user turn as it goes into the cache now: after the pins it may not need its opening markup."""
        first = not self._has_exchange()
        folded = self._system_in_first_turn and first and group == (self._first_group or group)
        return self._chat_format().user(
            text, open=not (self._folds and first), system=self.system_prompt if folded else None
        )

    def _feed_user(
        self,
        group: int,
        text: str,
        *,
        cancel: threading.Event | None = None,
        logits: bool = True,
        generation: bool = True,
        progress: bool = False,
    ) -> int | None:
        """Feed a user turn (and the reply's opening); the number of tokens, or None if cancelled."""
        opener, body = self._user_tokens(self._turn(group, text), first=not self.engine.tokens)
        prompt = self._tokenize(self._chat_format().generation) if generation else []
        need = len(opener) + len(body) + len(prompt)
        if progress:
            self._reading(need)
        # Room first: if that evicts every older exchange, this turn follows the pins (which open it, when folded).
        self.engine.make_room(min(need, self.engine.chunk_size()), group)
        if opener and self._folds and not self._has_exchange():
            opener, need = [], need - len(opener)
        if self._first_group is None:
            self._first_group = group
        if opener:
            self.engine.feed(opener, "user", group, opener=self._folds, logits=False)
        if not self.engine.feed(body, "user", group, logits=logits and not prompt, cancel=cancel):
            return None
        self.engine.feed(prompt, "assistant", group, logits=logits)
        return need

    def _append_exchange(self, group: int, user: str, reply: str) -> None:
        """Feed one finished exchange (no sampling), the reply in its history form."""
        self._feed_user(group, user, logits=False, generation=False)
        form = self._chat_format().reply(reply)
        self.engine.feed(self._span_tokens(form.spans), "assistant", group, logits=False)

    def _exchange_tokens(self, user: str, reply: str) -> list[int]:
        """The tokens of one whole exchange (a good estimate of its size in the cache)."""
        fmt = self._chat_format()
        opener, body = self._user_tokens(fmt.user(user))
        return opener + body + self._span_tokens(fmt.reply(reply).spans)

    def _user_tokens(self, turn: UserTurn, *, first: bool = False) -> tuple[list[int], list[int]]:
        """A user turn's opening markup and the rest, as tokens (BOS before whichever comes first)."""
        opener = self._tokenize(turn.open, first=first)
        return opener, self._span_tokens(turn.body, first=first and not opener)

    def _span_tokens(self, spans: Sequence[Span], *, first: bool = False) -> list[int]:
        """Tokens of template pieces: markup parsed for special tokens, literal text kept as text."""
        tokens: list[int] = []
        for text, literal in spans:
            if text:
                tokens += self._tokenize(text, first=first and not tokens, literal=literal)
        return tokens

    def _reply(
        self, group: int, max_tokens: int | None, stop: Sequence[str], n_prompt: int, prompt_seconds: float
    ) -> Iterator[str]:
        """Stream the assistant's reply, then record it and close the turn in the cache."""
        pieces: list[str] = []
        try:
            yield from self._stream("assistant", group, pieces, max_tokens, stop, True, n_prompt, prompt_seconds)
        finally:
            content = "".join(pieces)
            self.messages.append({"role": "assistant", "content": content})
            self._close_reply(group, content)

    def _close_reply(self, group: int, content: str) -> None:
        """Leave the reply in the cache as the template renders it once another turn follows.

        Usually that is the generated tokens and the closing markup.  Where the template
        strips reasoning, trims, opens earlier replies differently or a stop string cut the
        text, the tokens from the first difference on are replaced (only those are read).
        """
        fmt = self._chat_format()
        form = fmt.reply(content)
        closing = self._tokenize(form.close)
        found = self.engine.layout.find("assistant", group)
        if found is None or found[1].cut:  # the reply's start was evicted: close it where it stands
            self.engine.feed(closing, "assistant", group, logits=False)
            return
        start = found[0]
        if form.open != fmt.generation:
            self.engine.truncate(start)
            self.engine.feed(self._span_tokens(form.spans), "assistant", group, logits=False)
            return
        keep = start + len(self._tokenize(fmt.generation))
        target = form.content.encode("utf-8")
        pos, ends = 0, [(keep, 0)]
        for token in self.engine.tokens[keep:]:
            piece = self.model.token_to_piece(token)
            if not piece or not target.startswith(piece, pos):
                break
            pos += len(piece)
            ends.append((ends[-1][0] + 1, pos))
        while ends[-1][1] < len(target) and (target[ends[-1][1]] & 0xC0) == 0x80:
            ends.pop()  # a token ended inside a character that differs later: read that character again
        keep, pos = ends[-1]
        if keep < self.engine.n_cached:
            self.engine.truncate(keep)
        rest = target[pos:].decode("utf-8")
        self.engine.feed(self._span_tokens(((rest, True), (form.close, False))), "assistant", group, logits=False)

    def _group_cache_start(self, group: int) -> int:
        """Cache position of the first token of ``group`` that is still cached."""
        layout = self.engine.layout
        if group == self._first_group and self._opening_len < layout.n_pinned:
            return self._opening_len  # the first message also filled the sink slots
        start = layout.group_start(group)
        return start if start is not None else self.engine.n_cached

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
        n, n_context = 0, self.engine.n_cached
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
            self.last_reply = ReplyInfo(
                finish, n, prompt_tokens, time.perf_counter() - started, prompt_seconds, n_context
            )

    def _tokenize(self, text: str, *, first: bool = False, literal: bool = False) -> list[int]:
        """Template text to tokens; BOS is added only at the very start, and only if the template did not.

        ``literal`` text (what a person typed, what the model wrote) is read without
        parsing special markers, so a pasted ``<|im_end|>`` stays text and cannot break
        the chat's structure.
        """
        if not text:
            return []
        add_bos = first and self.model.add_bos and not text.startswith(self.model.token_text(self.model.bos))
        return self.model.tokenize(text, add_special=add_bos, parse_special=not literal)

    @contextmanager
    def _exclusive(self, doing: str) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            busy = self._doing or "busy"
            if busy in ("replying", "continuing the text"):
                raise BusyError(f"the chat is {busy}; wait for it or cancel it first")
            raise BusyError(f"the chat is {busy}; wait for it to finish")
        self._doing = doing
        try:
            yield
        finally:
            self._doing, self._task = "", None
            self._lock.release()

    def _reading(self, total: int) -> None:
        """Start the progress of a read of ``total`` tokens (shown while the chat is busy)."""
        self._task = (self.engine.fed_tokens, total)

    def close(self) -> None:
        """Free the context (and the model, when this chat loaded it)."""
        self.context.close()
        if self._owns_model:
            self.model.close()

    def __enter__(self) -> Chat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
