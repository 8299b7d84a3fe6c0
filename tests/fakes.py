"""Test doubles: a KV cache with llama.cpp's position semantics, without a model."""

from __future__ import annotations

from collections.abc import Sequence


class FakeKV:
    """Cells of ``(position, token)`` that obey seq_rm / seq_add / decode like llama.cpp's cache.

    It checks what a real cache would punish: decoding at a position that is not the next
    free one, exceeding the physical size, shifting a cache that cannot shift.
    """

    def __init__(
        self, size: int, *, n_batch: int = 64, can_shift: bool = True, partial_rm: bool = True, swa: int | None = None
    ) -> None:
        """``swa``: a sliding window; like llama.cpp's small SWA cache (window + a batch), it keeps
        ``2 * swa`` cells and reuses those of older positions."""
        self.size = size
        self.swa = swa
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
        expected = self.pos_max() + 1  # cells stay sorted by position: decode appends, rm and add keep order
        assert start == expected, f"decode at {start}, but the next position is {expected}"
        self.cells.extend((start + i, t) for i, t in enumerate(tokens))
        if self.swa is not None:  # like llama.cpp's SWA cache: cells out of the window are reused
            newest = self.cells[-1][0]
            self.cells = [(p, t) for p, t in self.cells if p > newest - 2 * self.swa]
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

    def has_history(self, pos: int) -> bool:
        if self.swa is None:
            return True
        if not self.cells:
            return pos == 0
        return self.cells[0][0] <= max(0, pos - self.swa)

    def pos_max(self) -> int:
        return self.cells[-1][0] if self.cells else -1

    def clear(self) -> None:
        self.cells = []
