"""Sliding-window models: a full-size SWA cache when it fits, else visible re-reads that stay correct.

The fast tests drive the engine on a fake cache that forgets positions out of its window,
as llama.cpp's small SWA cache does; the slow ones run Gemma 3 270M (interleaved sliding
window 512) both ways.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from models.fit import Hardware
from models.gguf_meta import read_gguf
from models.swa import choose_swa_full, swa_cells
from sinkchat.engine import SinkEngine
from sinkchat.policy import SinkPolicy
from tests.fakes import FakeKV

GEMMA_META = {
    "gemma3.block_count": 18,
    "gemma3.attention.head_count": 4,
    "gemma3.attention.head_count_kv": 1,
    "gemma3.attention.key_length": 256,
    "gemma3.embedding_length": 640,
    "gemma3.attention.sliding_window": 512,
}


def info(metadata: dict, size: int = 253_000_000):  # a GGUFInfo without a file
    from models.gguf_meta import GGUFInfo

    return GGUFInfo(
        path=Path("m.gguf"),
        file_size=size,
        version=3,
        n_tensors=1,
        architecture="gemma3",
        name="m",
        metadata=metadata,
        n_params=0,
    )


def test_a_full_sliding_window_cache_is_chosen_when_it_fits() -> None:
    roomy = Hardware(ram_available=16 << 30)
    choice = choose_swa_full(info(GEMMA_META), 8192, hardware=roomy)
    assert choice.swa_full and choice.shifts and choice.window == 512
    assert "lets the cache shift" in choice.reason and choice.extra_bytes > 0


def test_without_the_memory_it_falls_back_and_says_so() -> None:
    tight = Hardware(ram_available=300 << 20)
    choice = choose_swa_full(info(GEMMA_META), 8192, hardware=tight)
    assert not choice.swa_full and not choice.shifts
    assert "re-reads the kept cache instead" in choice.reason


def test_a_cache_within_the_window_needs_nothing() -> None:
    assert swa_cells(512, 512) == 1024
    small = choose_swa_full(info(GEMMA_META), 1024, hardware=Hardware(ram_available=1 << 30))
    assert not small.swa_full and small.shifts
    plain = choose_swa_full(info({"gemma3.block_count": 18}), 8192, hardware=Hardware(ram_available=1 << 30))
    assert plain.window is None and not plain.swa_full


def test_a_sliding_window_cache_is_read_again_from_the_start_with_progress() -> None:
    """After a cut, a small SWA cache lacks the window before it: continuing there would be wrong."""
    kv = FakeKV(1000, n_batch=32, can_shift=False, swa=96)
    engine = SinkEngine(kv, SinkPolicy(discard=60), capacity=200, pin_target=4)
    seen: list[tuple[int, int]] = []
    decode = kv.decode

    def watching(tokens, start, logits="last"):  # noqa: ANN001, ANN202
        if engine.rereading is not None:
            seen.append(engine.rereading)
        return decode(tokens, start, logits)

    kv.decode = watching  # type: ignore[method-assign]
    engine.feed(list(range(4)), "system", 0, pin=True)
    for i in range(600):
        engine.feed([1000 + i], "raw", 1)
        assert engine.n_cached <= 200
        present = dict(kv.cells)
        assert all(present[p] == engine.tokens[p] for p in present), "the cache holds other tokens than the mirror"
    assert engine.fallbacks >= 5 and engine.shifts == engine.fallbacks
    assert engine.reread_tokens >= engine.fallbacks * 140  # each time from position 0, pins included
    assert seen and seen[0] == (0, seen[0][1]) and max(d for d, _ in seen) > 0
    assert engine.rereading is None


def test_truncating_a_sliding_window_cache_reads_again_when_the_window_is_gone() -> None:
    kv = FakeKV(1000, n_batch=32, can_shift=False, swa=64)
    engine = SinkEngine(kv, SinkPolicy(), capacity=400, pin_target=4)
    engine.feed(list(range(300)), "raw", 1)
    engine.truncate(290)  # the window before 290 is still there
    assert engine.fallbacks == 0
    engine.feed(list(range(100)), "raw", 1)
    engine.truncate(150)  # the cells before 150 were reused long ago
    assert engine.fallbacks == 1 and kv.pos_max() == 149
    assert all(engine.tokens[p] == t for p, t in kv.cells)


# -- Gemma 3 270M, a real interleaved sliding-window model -------------------------------


@pytest.mark.slow
def test_gemma_shifts_through_a_long_generation_without_stalls(gemma_path: Path) -> None:
    """4,500 tokens at n_ctx 2048: the full-size window cache is chosen, and every step reads one token.

    A stall is work, not time: a re-read evaluates the whole kept cache (1,500+ tokens) in
    one step.  Counting the tokens each step evaluates tells it apart deterministically on a
    shared machine; the latencies themselves (2.5x the median at most, against 136x when
    re-reading) are measured side by side in ``benchmarks/bench_swa.py``.
    """
    from sinkchat.chat import Chat

    with Chat.load(gemma_path, n_ctx=2048, sampling={"seed": 3}) as chat:
        assert chat.context.n_swa == 512
        assert chat.context.swa_full and chat.context.can_shift  # chosen: the memory fits
        assert any("full-size SWA cache" in note for note in chat.notes)
        batches: list[int] = []
        decode = chat.context.decode

        def counting(tokens, start, logits="last"):  # noqa: ANN001, ANN202
            batches.append(len(tokens))
            return decode(tokens, start, logits)

        chat.context.decode = counting  # type: ignore[method-assign]
        times, last = [], time.perf_counter()
        for _ in chat.generate("The history of the city of Rome", max_tokens=4500, stop_at_eos=False):
            now = time.perf_counter()
            times.append(now - last)
            last = now
            assert chat.engine.n_cached <= chat.n_ctx
        assert chat.last_reply is not None and chat.last_reply.n_tokens == 4500
        stats = chat.stats
        assert stats.shifts >= 4 and stats.fallbacks == 0 and stats.reread_tokens == 0
        assert chat.context.pos_max() == stats.n_cached - 1 and stats.n_cached <= 2048
        assert batches[1:] == [1] * (len(batches) - 1)  # after the prompt, one token per step: shifts, no re-read
        print(f"max/median token latency: {max(times[1:]) / statistics.median(times):.1f}")


@pytest.mark.slow
def test_gemma_without_a_full_window_cache_reads_again_and_shows_it(gemma_path: Path) -> None:
    from sinkchat.chat import Chat

    with Chat.load(gemma_path, n_ctx=2048, swa_full=False, sampling={"seed": 3}) as chat:
        assert not chat.context.can_shift
        progress: list[tuple[int, int]] = []
        decode = chat.context.decode

        def watching(tokens, start, logits="last"):  # noqa: ANN001, ANN202
            if chat.stats.rereading is not None:
                progress.append(chat.stats.rereading)
            return decode(tokens, start, logits)

        chat.context.decode = watching  # type: ignore[method-assign]
        for _ in chat.generate("The history of the city of Rome", max_tokens=2900, stop_at_eos=False):
            assert chat.engine.n_cached <= 2048
        stats = chat.stats
        assert stats.fallbacks == 2 and stats.reread_tokens >= 3000  # from the start: the window before is gone
        assert progress and {total for _, total in progress} == {1538}  # shown batch by batch
        assert [done for done, _ in progress[:3]] == [0, 512, 1024]
        assert chat.context.pos_max() == stats.n_cached - 1


def test_gemma_gguf_says_what_it_is(gemma_path: Path) -> None:
    meta = read_gguf(gemma_path)
    assert meta.architecture == "gemma3" and meta.chat_template is None
    assert meta.metadata["gemma3.attention.sliding_window"] == 512
