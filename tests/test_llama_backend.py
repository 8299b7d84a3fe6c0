"""The llama.cpp backend on SmolLM2: tokenizer, sampler, and position-shift correctness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import DecodeError
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions
from models.sampler import Sampler, SamplingSettings

pytestmark = pytest.mark.slow

TEXT = (
    "The lighthouse keeper climbed the spiral stairs every evening, lit the great lamp, "
    "and watched the ships pass safely along the rocky coast until the"
)


@pytest.fixture(scope="module")
def model(smollm2_path: Path):
    m = LlamaModel(smollm2_path)
    yield m
    m.close()


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max()
    return x - np.log(np.exp(x).sum())


def kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    lp, lq = log_softmax(p_logits), log_softmax(q_logits)
    return float((np.exp(lp) * (lp - lq)).sum())


def next_token_logits_after_shift(model: LlamaModel, tokens: list[int], delta: int, **options) -> np.ndarray:
    """Evaluate all but the last token at 0.., move them by ``delta`` with seq_add, then the last one."""
    ctx = LlamaContext(model, LoadOptions(n_ctx=512, **options))
    try:
        ctx.decode(tokens[:-1], 0, "none")
        ctx.seq_add(0, -1, delta)
        assert ctx.pos_min() == delta and ctx.pos_max() == delta + len(tokens) - 2
        ctx.decode(tokens[-1:], delta + len(tokens) - 1)
        return ctx.logits()
    finally:
        ctx.close()


def fresh_logits_at(model: LlamaModel, tokens: list[int], offset: int, **options) -> np.ndarray:
    ctx = LlamaContext(model, LoadOptions(n_ctx=512, **options))
    try:
        ctx.decode(tokens, offset)
        return ctx.logits()
    finally:
        ctx.close()


def translation_noise(model: LlamaModel, tokens: list[int], delta: int, **options) -> float:
    """KL between fresh evaluations at offsets 0 and ``delta``.

    RoPE attention depends only on relative positions, so this would be 0 in exact
    arithmetic; with Q4_1 weights it is not, and it is the floor a shift is held to.
    """
    return kl(fresh_logits_at(model, tokens, 0, **options), fresh_logits_at(model, tokens, delta, **options))


@pytest.mark.parametrize("delta", [1, 37, 200])
@pytest.mark.parametrize("type_k", ["f16", "q8_0"])
def test_seq_add_matches_a_fresh_evaluation_at_the_shifted_positions(
    model: LlamaModel, delta: int, type_k: str
) -> None:
    tokens = model.tokenize(TEXT)
    shifted = next_token_logits_after_shift(model, tokens, delta, type_k=type_k)
    fresh = fresh_logits_at(model, tokens, delta, type_k=type_k)
    floor = translation_noise(model, tokens, delta, type_k=type_k)
    assert int(shifted.argmax()) == int(fresh.argmax())
    assert kl(fresh, shifted) < 0.05
    assert kl(fresh, shifted) <= 3 * floor + 0.005, (kl(fresh, shifted), floor)


def test_removing_a_range_and_sliding_the_tail_back_keeps_relative_positions(model: LlamaModel) -> None:
    """What the engine does on eviction: seq_rm then seq_add(-n) must equal leaving the gap."""
    tokens = model.tokenize(TEXT)
    drop = 10

    def run(slide: bool) -> np.ndarray:
        ctx = LlamaContext(model, LoadOptions(n_ctx=256))
        try:
            ctx.decode(tokens[:-1], 0, "none")
            assert ctx.seq_rm(0, drop)
            offset = 0
            if slide:
                ctx.seq_add(drop, -1, -drop)
                offset = drop
            assert (ctx.pos_min(), ctx.pos_max()) == (drop - offset, len(tokens) - 2 - offset)
            ctx.decode(tokens[-1:], len(tokens) - 1 - offset)
            return ctx.logits()
        finally:
            ctx.close()

    gap, slid = run(False), run(True)
    assert int(gap.argmax()) == int(slid.argmax())
    assert kl(gap, slid) <= 3 * translation_noise(model, tokens, drop) + 0.005


def test_tokenizer_round_trip_and_special_tokens(model: LlamaModel) -> None:
    text = "Grüße, 世界! <|im_start|>"
    tokens = model.tokenize(text, parse_special=False)
    assert model.detokenize(tokens) == text
    special = model.tokenize("<|im_start|>user", parse_special=True)
    assert special[0] == model.bos and model.token_text(special[0]) == "<|im_start|>"
    assert model.is_eog(model.eos)
    assert model.n_layer == 30 and model.n_ctx_train == 8192


def test_greedy_sampling_is_deterministic_and_seeded_sampling_repeats(model: LlamaModel) -> None:
    def run(settings: SamplingSettings) -> list[int]:
        ctx = LlamaContext(model, LoadOptions(n_ctx=128))
        sampler = Sampler(settings, model.n_vocab)
        try:
            tokens = model.tokenize(TEXT)
            ctx.decode(tokens, 0)
            out = []
            for i in range(12):
                token = sampler.sample(ctx)
                out.append(token)
                ctx.decode([token], len(tokens) + i)
            return out
        finally:
            sampler.close()
            ctx.close()

    greedy = SamplingSettings(temperature=0.0)
    assert run(greedy) == run(greedy)
    seeded = SamplingSettings(temperature=1.0, seed=42)
    assert run(seeded) == run(seeded)


def test_reading_the_file_instead_of_mapping_it_gives_the_same_model(model: LlamaModel, smollm2_path: Path) -> None:
    # This llama.cpp has a load mode instead of use_mmap: setting the old field was a silent no-op.
    read = LlamaModel(smollm2_path, use_mmap=False)
    try:
        tokens = model.tokenize(TEXT)
        logits = []
        for m in (model, read):
            ctx = LlamaContext(m, LoadOptions(n_ctx=256))
            ctx.decode(tokens, 0)
            logits.append(ctx.logits())
            ctx.close()
        assert np.array_equal(logits[0], logits[1])
    finally:
        read.close()


def test_a_full_snapshot_restores_bit_for_bit(model: LlamaModel) -> None:
    tokens = model.tokenize(TEXT)
    a = LlamaContext(model, LoadOptions(n_ctx=256))
    a.decode(tokens[:-1], 0, "none")
    saved = a.save_state()
    a.decode(tokens[-1:], len(tokens) - 1)
    b = LlamaContext(model, LoadOptions(n_ctx=256))
    b.load_state(saved)
    assert b.pos_max() == len(tokens) - 2
    b.decode(tokens[-1:], len(tokens) - 1)
    assert np.array_equal(a.logits(), b.logits())
    c = LlamaContext(model, LoadOptions(n_ctx=256, type_k="q8_0"))
    with pytest.raises(DecodeError, match="rejected the saved KV cache"):
        c.load_state(saved)
    assert c.pos_max() == -1  # a refused load leaves the sequence empty
    for ctx in (a, b, c):
        ctx.close()


def test_a_context_larger_than_the_memory_is_refused_before_llama_cpp_allocates_it(
    model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every context is checked (benches make their own), against the memory there is once the weights are in."""
    import time

    import models.fit
    from models.errors import ContextTooLargeError
    from models.fit import Hardware

    monkeypatch.setattr(models.fit, "detect_hardware", lambda: Hardware(ram_available=1 << 30))
    start = time.monotonic()
    with pytest.raises(ContextTooLargeError, match=r"a context of 65536 tokens .* \(85% of 1\.1 GB available RAM\)"):
        LlamaContext(model, LoadOptions(n_ctx=65536))
    assert time.monotonic() - start < 1
    with LlamaContext(model, LoadOptions(n_ctx=4096)) as ctx:  # 200 MB: fits
        assert ctx.n_ctx == 4096
