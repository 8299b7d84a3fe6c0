"""Cache policies for a raw token stream (perplexity, endless generation), all on one engine.

- ``dense``: no eviction; the stream ends when the cache is full (llama.cpp allocates the
  whole ``n_ctx`` up front, so its memory is the largest from the start).
- ``window``: a sliding window without sinks: the oldest tokens go, the first ones too.
- ``sinks``: sinkchat's cache: the first ``sinks`` tokens stay, the rest slides (a
  context shift: ``seq_rm`` + ``seq_add``).
- ``recompute``: a sliding window rebuilt from text: the kept tokens are evaluated again
  from position 0, for every fed chunk (``every_feed``) or when the cache is full.  The
  quality oracle and the slow baseline of the StreamingLLM paper.  A model trained with a
  BOS token reads [BOS + window], as it would any text from scratch: without it, models
  such as Gemma read every rebuilt window as broken input, and the oracle scores worse
  than the window it should beat.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Literal

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from sinkchat.engine import SinkEngine
from sinkchat.policy import SinkPolicy

StreamPolicy = Literal["dense", "window", "sinks", "recompute"]
STREAM_POLICIES: tuple[StreamPolicy, ...] = ("dense", "window", "sinks", "recompute")
Logits = Literal["all", "last", "none"]


class CacheFull(Exception):
    """The dense cache has no room left: the run ends here."""


class TokenStream:
    """Feeds tokens through one cache policy; the caller reads logits from ``ctx``."""

    def __init__(self, ctx: LlamaContext, n_ctx: int) -> None:
        self.ctx = ctx
        self.n_ctx = n_ctx
        self.shifts = 0
        self.fallbacks = 0
        """Shifts done by reading the cache again (a cache that cannot shift): a window is then a recompute."""

    @property
    def n_cached(self) -> int:
        raise NotImplementedError

    def max_chunk(self) -> int:
        """The largest feed that keeps "all" logits readable and fits the window."""
        raise NotImplementedError

    def feed(self, tokens: Sequence[int], logits: Logits = "last") -> None:
        raise NotImplementedError


class SlidingStream(TokenStream):
    """``sinks`` (pinned first tokens) or ``window`` (``sinks=0``), shifting by ``discard`` tokens."""

    def __init__(self, ctx: LlamaContext, n_ctx: int, sinks: int, discard: int | None) -> None:
        super().__init__(ctx, n_ctx)
        self.engine = SinkEngine(ctx, SinkPolicy(discard=discard, aligned=False), capacity=n_ctx, pin_target=sinks)

    @property
    def n_cached(self) -> int:
        return self.engine.n_cached

    def max_chunk(self) -> int:
        return self.engine.chunk_size()

    def feed(self, tokens: Sequence[int], logits: Logits = "last") -> None:
        mode: bool | Literal["all"] = "all" if logits == "all" else logits == "last"
        self.engine.feed(tokens, "raw", 1, logits=mode)
        self.shifts = self.engine.shifts
        self.fallbacks = self.engine.fallbacks


class DenseStream(SlidingStream):
    """Never evicts: :class:`CacheFull` once the next tokens do not fit."""

    def __init__(self, ctx: LlamaContext, n_ctx: int) -> None:
        super().__init__(ctx, n_ctx, sinks=0, discard=None)

    def max_chunk(self) -> int:
        return self.ctx.n_batch

    def feed(self, tokens: Sequence[int], logits: Logits = "last") -> None:
        if len(tokens) > self.engine.layout.free:
            raise CacheFull(f"the cache of {self.n_ctx} tokens is full")
        super().feed(tokens, logits)


class RecomputeStream(TokenStream):
    """Sliding window with re-computation: the kept window is evaluated again from position 0.

    ``every_feed`` rebuilds before every feed (each chunk then sees exactly the
    ``n_ctx - len(chunk)`` tokens before it); otherwise the window is rebuilt only when
    full, dropping ``discard`` tokens (cheap enough for token-by-token generation).
    """

    def __init__(
        self, ctx: LlamaContext, n_ctx: int, discard: int | None, every_feed: bool, bos: int | None = None
    ) -> None:
        """``bos``: the token a rebuilt window starts with (a model trained with BOS), None for none."""
        super().__init__(ctx, n_ctx)
        self.discard = discard or max(1, n_ctx // 4)
        self.every_feed = every_feed
        self.bos = bos
        self.history: deque[int] = deque(maxlen=n_ctx)
        self._cached = 0

    @property
    def n_cached(self) -> int:
        return self._cached

    def max_chunk(self) -> int:
        return max(1, min(self.ctx.n_batch, self.n_ctx // 2))

    def feed(self, tokens: Sequence[int], logits: Logits = "last") -> None:
        n = len(tokens)
        if n > self.max_chunk():
            raise ValueError(f"feed at most {self.max_chunk()} tokens at a time")
        if self.every_feed or self._cached + n > self.n_ctx:
            room = self.n_ctx - n if self.every_feed else self.n_ctx - max(n, self.discard)
            head = [self.bos] if self.bos is not None else []
            keep_n = max(0, min(len(self.history), room - len(head)))
            keep = list(self.history)[len(self.history) - keep_n :] if keep_n else []
            if keep and head and keep[0] != self.bos:
                keep = head + keep
            self.ctx.clear()
            if keep:
                self.ctx.decode(keep, 0, "none")
            self.shifts += 1
            self._cached = len(keep)
        self.ctx.decode(tokens, self._cached, logits)
        self._cached += n
        self.history.extend(tokens)


def dense_size(model: LlamaModel, given: int | None, fallback: int) -> int:
    """The ``dense`` policy's cache: as given, else the model's training context."""
    return given or model.n_ctx_train or fallback


def open_stream(
    policy: StreamPolicy,
    ctx: LlamaContext,
    *,
    sinks: int = 4,
    discard: int | None = None,
    recompute_every_feed: bool = True,
    bos: int | None = None,
) -> TokenStream:
    """A stream of ``policy`` over ``ctx`` (fresh: the context is cleared).

    ``bos``: the token ``recompute`` starts each rebuilt window with (the model's BOS when it expects one).
    """
    ctx.clear()
    n_ctx = ctx.options.n_ctx  # llama.cpp may pad its own n_ctx; the budget is what was asked for
    if policy == "dense":
        return DenseStream(ctx, n_ctx)
    if policy == "window":
        return SlidingStream(ctx, n_ctx, sinks=0, discard=discard)
    if policy == "sinks":
        return SlidingStream(ctx, n_ctx, sinks=sinks, discard=discard)
    if policy == "recompute":
        return RecomputeStream(ctx, n_ctx, discard=discard, every_feed=recompute_every_feed, bos=bos)
    raise ValueError(f"unknown policy {policy!r}")
