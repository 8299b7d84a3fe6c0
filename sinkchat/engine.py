"""The engine executes the sink policy on a llama.cpp context and keeps the layout in step.

Every append asks the policy for room first.  An eviction is a context shift: remove the
range with ``seq_rm`` and slide the tail back with ``seq_add`` (llama.cpp re-rotates the
keys), so positions stay contiguous and the sinks sit right before the recent tokens.
When the cache cannot shift (M-RoPE, SWA without a full cache, recurrent models) the kept
tokens are evaluated again instead, and the fallback is counted; ``rereading`` reports its
progress so a UI can show it rather than freeze.  A sliding-window cache also forgets old
positions on its own: a tail can then be cut but not continued from (the window before the
cut is gone), and everything is read again from the start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from sinkchat.layout import CacheLayout, Eviction, Role
from sinkchat.policy import SinkPolicy

log = logging.getLogger(__name__)


class KVContext(Protocol):
    """What the engine needs from a llama.cpp context (``models.llama_context.LlamaContext``)."""

    n_batch: int

    @property
    def can_shift(self) -> bool: ...
    def decode(self, tokens: Sequence[int], start: int, logits: str = "last") -> None: ...
    def seq_rm(self, p0: int, p1: int) -> bool: ...
    def seq_add(self, p0: int, p1: int, delta: int) -> None: ...
    def clear(self) -> None: ...
    def has_history(self, pos: int) -> bool:
        """True when the cache still holds every position a token at ``pos`` attends to."""
        ...


class SinkEngine:
    """Owns what is in one cached sequence: the token mirror and its :class:`CacheLayout`."""

    def __init__(self, ctx: KVContext, policy: SinkPolicy, capacity: int, pin_target: int) -> None:
        self.ctx = ctx
        self.policy = policy
        self.layout = CacheLayout(capacity=capacity, pin_target=pin_target)
        self.tokens: list[int] = []
        """Token at each cache position: ``tokens[i]`` sits at position ``i``."""
        self.shifts = 0
        self.evicted_tokens = 0
        self.fallbacks = 0
        self.last_shift_seconds: float | None = None
        self.shift_pending = False
        """A shift llama.cpp applies at the next decode: until then a saved state would lose it."""
        self.rereading: tuple[int, int] | None = None
        """``(done, total)`` tokens while kept tokens are read again (a cache that cannot shift), else None."""
        self.reread_tokens = 0
        """Tokens read again so far, by fallbacks: the cost a shift would have avoided."""
        self.fed_tokens = 0
        """Tokens evaluated by :meth:`feed` so far: progress of a long read is measured against it."""

    @property
    def n_cached(self) -> int:
        return len(self.tokens)

    def chunk_size(self) -> int:
        """Largest batch that always fits beside the pins, so a long text streams through the window."""
        return max(1, min(self.ctx.n_batch, self.layout.window // 2))

    def feed(
        self,
        tokens: Sequence[int],
        role: Role,
        group: int,
        *,
        pin: bool = False,
        opener: bool = False,
        logits: bool | Literal["all"] = True,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Evaluate ``tokens`` at the end of the cache, evicting as needed.

        With ``logits`` the last token's logits are kept for sampling; with ``"all"`` every
        token's are (for perplexity; pass at most :meth:`chunk_size` tokens, since only the
        last decoded chunk's outputs stay readable).  Returns False when ``cancel`` was set
        between chunks (what was fed so far stays in the cache).
        """
        if pin and len(tokens) > self.layout.free:
            raise ValueError(f"{len(tokens)} pinned tokens do not fit in {self.layout.free} free slots")
        i, n = 0, len(tokens)
        while i < n:
            if cancel is not None and cancel.is_set():
                return False
            size = self.layout.free if pin else self.chunk_size()
            chunk = tokens[i : i + size]
            if not pin:
                self.make_room(len(chunk), group)
            last = i + len(chunk) >= n
            at = len(self.tokens)
            try:
                mode = "all" if logits == "all" else "last" if logits and last else "none"
                self.ctx.decode(chunk, at, mode)
                self.shift_pending = False
                self.layout.append(role, group, len(chunk), pin=pin, opener=opener)
                self.tokens.extend(chunk)
                self.fed_tokens += len(chunk)
            except BaseException:
                # A failed or interrupted step must not leave the cache and the mirror apart.
                self._rollback(at)
                raise
            i += len(chunk)
        return True

    def feed_logits(self, tokens: Sequence[int], role: Role, group: int) -> Any:
        """Feed ``tokens`` (chunk by chunk, evicting as needed) and return every token's logits, one row each:
        row ``i`` is what the model expects after token ``i``.  For teacher-forced scoring."""
        import numpy as np

        rows = []
        step = self.chunk_size()
        for at in range(0, len(tokens), step):
            piece = tokens[at : at + step]
            self.feed(piece, role, group, logits="all")
            rows.append(self.ctx.all_logits(len(piece)))  # type: ignore[attr-defined]
        return np.concatenate(rows) if rows else np.empty((0, 0), dtype=np.float32)

    def score_continuations(
        self, first_logits: Any, continuations: Sequence[Sequence[int]], role: Role, group: int
    ) -> list[float]:
        """Log-probability of each token sequence after the cache as it is, each removed again.

        ``first_logits`` are the logits after the last cached token (they score each sequence's
        first token); the rest is teacher-forced.  Make room for the longest sequence first, so
        every one is scored against the same cache.
        """
        import numpy as np

        first = np.asarray(first_logits, dtype=np.float64)
        first_z = log_normalizer(first)
        base = self.n_cached
        scores = []
        for tokens in continuations:
            logp = float(first[tokens[0]] - first_z)
            if len(tokens) > 1:
                self.feed(tokens[:-1], role, group, logits="all")
                rows = self.ctx.all_logits(len(tokens) - 1).astype(np.float64)  # type: ignore[attr-defined]
                targets = np.asarray(tokens[1:])
                logp += float((rows[np.arange(len(targets)), targets] - log_normalizer(rows)).sum())
                self.truncate(base)
            scores.append(logp)
        return scores

    def make_room(self, need: int, group: int | None = None) -> Eviction | None:
        eviction = self.policy.plan(self.layout, need, group)
        if eviction is not None:
            self.evict(eviction)
        return eviction

    def evict(self, eviction: Eviction) -> None:
        """Apply one eviction to the KV cache, the token mirror and the layout."""
        started = time.perf_counter()
        start, end, n = eviction.start, eviction.end, eviction.n_tokens
        shifted = False
        if self.ctx.can_shift and self.ctx.seq_rm(start, end):
            self.ctx.seq_add(end, -1, -n)
            shifted = self.shift_pending = True
        del self.tokens[start:end]
        self.layout.apply(eviction)
        if not shifted:
            self._reprefill(start)
        self.shifts += 1
        self.evicted_tokens += n
        self.last_shift_seconds = time.perf_counter() - started
        log.debug("evicted [%d, %d) aligned=%s shifted=%s", start, end, eviction.aligned, shifted)

    def truncate(self, n_keep: int) -> None:
        """Drop every position from ``n_keep`` on (undo of a cancelled prompt)."""
        if n_keep < len(self.tokens):
            self._rollback(n_keep)

    def _rollback(self, n_keep: int) -> None:
        """Cut cache, mirror and layout back to ``n_keep`` tokens (the cache may hold more than the mirror)."""
        del self.tokens[n_keep:]
        if self.layout.n_cached > n_keep:
            self.layout.truncate(n_keep)
        if not (self.ctx.seq_rm(n_keep, -1) and self.ctx.has_history(n_keep)):
            self.fallbacks += 1
            self._read_again(0)

    def _reprefill(self, start: int) -> None:
        """Fallback for caches that cannot shift: evaluate the kept tokens again.

        When a tail can still be removed and continued from, only the tokens after the
        pins are evaluated again; else everything is.
        """
        self.fallbacks += 1
        self._read_again(start if self.ctx.seq_rm(start, -1) and self.ctx.has_history(start) else 0)

    def _read_again(self, start: int) -> None:
        """Evaluate ``tokens[start:]`` again, batch by batch, with ``rereading`` progress."""
        if start == 0:
            self.ctx.clear()
        todo = self.tokens[start:]
        step = max(1, self.ctx.n_batch)
        try:
            for done in range(0, len(todo), step):
                self.rereading = (done, len(todo))
                self.ctx.decode(todo[done : done + step], start + done, "none")
        finally:
            self.rereading = None
        self.reread_tokens += len(todo)
        log.info("cache cannot shift: read %d kept tokens again", len(todo))


def log_normalizer(logits: Any) -> Any:
    """log-sum-exp over the last axis (the normaliser of a log-softmax), stable for large logits."""
    import numpy as np

    top = logits.max(axis=-1, keepdims=True)
    return np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
