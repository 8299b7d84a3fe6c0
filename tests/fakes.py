"""Test doubles: a KV cache with llama.cpp's position semantics, without a model."""

from __future__ import annotations

from collections.abc import Sequence


class FakeKV:
    """Cells of ``(position, token)`` that obey seq_rm / seq_add / decode like llama.cpp's cache.

    It checks what a real cache would punish: decoding at a position that is not the next
    free one, exceeding the physical size, shifting a cache that cannot shift.
    """

    def __init__(self, size: int, *, n_batch: int = 64, can_shift: bool = True, partial_rm: bool = True) -> None:
        self.size = size
        self.n_batch = n_batch
        self._can_shift = can_shift
        self.partial_rm = partial_rm
        self.cells: list[tuple[int, int]] = []
        self.decoded = 0
        self.max_cells = 0

    @property
    def can_shift(self) -> bool:
        return self._can_shift

    def positions(self) -> list[int]:
        return sorted(p for p, _ in self.cells)

    def contents(self) -> list[int]:
        return [t for _, t in sorted(self.cells)]

    def decode(self, tokens: Sequence[int], start: int, logits: str = "last") -> None:
        expected = max((p for p, _ in self.cells), default=-1) + 1
        assert start == expected, f"decode at {start}, but the next position is {expected}"
        self.cells.extend((start + i, t) for i, t in enumerate(tokens))
        assert len(self.cells) <= self.size, f"{len(self.cells)} cells exceed the cache size {self.size}"
        self.max_cells = max(self.max_cells, len(self.cells))
        self.decoded += len(tokens)

    def seq_rm(self, p0: int, p1: int) -> bool:
        end = p1 if p1 >= 0 else 1 << 60
        if not self.partial_rm and not (p0 <= 0 and p1 < 0):
            return False
        self.cells = [(p, t) for p, t in self.cells if not p0 <= p < end]
        return True

    def seq_add(self, p0: int, p1: int, delta: int) -> None:
        assert self._can_shift, "seq_add on a cache that cannot shift (llama.cpp would abort)"
        end = p1 if p1 >= 0 else 1 << 60
        self.cells = [(p + delta if p0 <= p < end else p, t) for p, t in self.cells]
        assert len({p for p, _ in self.cells}) == len(self.cells), "two cells at one position"

    def pos_max(self) -> int:
        return max((p for p, _ in self.cells), default=-1)

    def clear(self) -> None:
        self.cells = []
