"""The sink policy: which cached tokens to drop so the next ones fit.  Pure logic, no model.

StreamingLLM keeps the first few tokens (attention sinks) and a window of recent ones.
sinkchat adds message alignment: it evicts whole oldest exchanges (a user message and
its reply) so what stays is still a well-formed chat in the model's template.  Only the
newest exchange, when it alone outgrows the window (an endless reply, a huge paste), is
cut inside, oldest tokens first.  The pinned prefix is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

from sinkchat.layout import CacheLayout, Eviction


class PolicyError(ValueError):
    """The request cannot be met without evicting pinned tokens."""


@dataclass(frozen=True, slots=True)
class SinkPolicy:
    """Plans evictions for a :class:`CacheLayout`.

    ``discard`` is how many tokens a shift aims to free, so that shifts stay rare (one per
    many tokens, not one per token): old exchanges are dropped whole while they fit in it
    (and always as many as needed), and an over-long newest exchange is cut by that much.
    ``None`` means a quarter of the window.

    ``aligned=False`` ignores message boundaries and cuts ``discard`` tokens (or as many
    as required) right after the pins, as llama.cpp's own context shift does: only for
    comparison in the benchmarks, since it leaves a half-message at the front.
    """

    discard: int | None = None
    aligned: bool = True

    def __post_init__(self) -> None:
        if self.discard is not None and self.discard < 1:
            raise ValueError("discard must be at least 1 token")

    def discard_for(self, window: int) -> int:
        return self.discard if self.discard is not None else max(1, window // 4)

    def plan(self, layout: CacheLayout, need: int, group: int | None = None) -> Eviction | None:
        """Range to evict so that ``need`` more tokens fit, or None when they already do.

        ``group`` is the exchange the incoming tokens belong to; when it is a new one,
        every cached exchange is older and can go whole.
        """
        if need < 0:
            raise ValueError("need must not be negative")
        if need <= layout.free:
            return None
        if need > layout.window:
            raise PolicyError(
                f"{need} tokens cannot fit beside {layout.n_pinned} pinned tokens in a cache of {layout.capacity}"
            )
        required = need - layout.free
        goal = max(required, self.discard_for(layout.window))
        start = layout.n_pinned
        if not self.aligned:
            return Eviction(start=start, end=start + min(goal, layout.n_cached - start), aligned=False)
        groups = layout.group_sizes()
        current = groups[-1][0] if group is None else group

        # Whole older exchanges, oldest first: as many as required, then more while they fit the slack.
        evicted = 0
        for group, size in groups:
            if group == current or (evicted >= required and evicted + size > goal):
                break
            evicted += size
        if evicted >= required:
            # The exchange that becomes the oldest loses its opening markup: the pins hold it (folded templates).
            evicted += layout.opener_at(start + evicted)
            return Eviction(start=start, end=start + evicted, aligned=True)

        # Only the newest exchange is left and it alone is too long: cut inside it.
        # (required - evicted <= its size, because need <= window.)
        cut = min(goal - evicted, groups[-1][1])
        return Eviction(start=start, end=start + evicted + cut, aligned=False)
