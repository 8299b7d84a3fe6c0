"""Sliding-window models: give them a full-size cache so they can shift, when memory allows.

Gemma 2/3, gpt-oss and others interleave sliding-window (SWA) layers with global ones.
llama.cpp keeps the SWA layers' cache at about ``window + n_ubatch`` cells unless
``swa_full``; with ``n_ctx`` beyond that, ``llama_memory_can_shift`` is false and every
context shift becomes a re-read of the whole kept cache (seconds on a CPU, in the middle of
a reply).  A full-size SWA cache costs the memory of a normal cache, which
:mod:`models.fit` already budgets for every model: when that fits, it is turned on.
"""

from __future__ import annotations

from pydantic import BaseModel

from models.fit import HEADROOM, Hardware, detect_hardware, estimate, kv_shape
from models.gguf_meta import GGUFInfo
from models.units import human_bytes

# Bytes per K/V element of each cache type (block size included).
KV_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
}


class SwaChoice(BaseModel):
    """Whether to use a full-size SWA cache, and why, in words for the user."""

    swa_full: bool
    window: int | None
    """The model's sliding window (None: no sliding-window layers)."""
    shifts: bool
    """Whether the cache will be able to shift with this choice."""
    reason: str
    extra_bytes: int = 0
    """Memory a full-size SWA cache adds over the small one (estimated)."""


def swa_cells(window: int, n_ubatch: int) -> int:
    """Cells llama.cpp gives a small SWA cache: the window plus one batch, padded to 256."""
    return -(-(window + n_ubatch) // 256) * 256


def choose_swa_full(
    info: GGUFInfo,
    n_ctx: int,
    *,
    n_ubatch: int = 512,
    type_k: str = "f16",
    type_v: str = "f16",
    hardware: Hardware | None = None,
) -> SwaChoice:
    """Full-size SWA cache when the model has SWA layers, ``n_ctx`` outgrows them and the memory fits."""
    arch = info.architecture
    window = info.metadata.get(f"{arch}.attention.sliding_window") if arch else None
    if not isinstance(window, int) or window <= 0:
        return SwaChoice(swa_full=False, window=None, shifts=True, reason="no sliding-window layers")
    small = swa_cells(window, n_ubatch)
    if n_ctx <= small:
        return SwaChoice(
            swa_full=False,
            window=window,
            shifts=True,
            reason=f"n_ctx {n_ctx} fits the sliding-window cache ({small} cells): it shifts",
        )
    bytes_per_element = (KV_BYTES.get(type_k, 2.0) + KV_BYTES.get(type_v, 2.0)) / 2
    shape = kv_shape(info.metadata, arch)
    need = estimate(info.file_size, n_ctx, shape=shape, kv_bytes_per_element=bytes_per_element)
    extra = int(need.kv_cache * (1 - small / n_ctx))  # at most: the SWA layers' share is below 1
    budget = (hardware or detect_hardware()).budget
    if need.total <= HEADROOM * budget:
        return SwaChoice(
            swa_full=True,
            window=window,
            shifts=True,
            extra_bytes=extra,
            reason=(
                f"sliding window {window} < n_ctx {n_ctx}: a full-size SWA cache (up to +{human_bytes(extra)}) "
                "lets the cache shift"
            ),
        )
    return SwaChoice(
        swa_full=False,
        window=window,
        shifts=False,
        extra_bytes=extra,
        reason=(
            f"sliding window {window} < n_ctx {n_ctx}, and a full-size SWA cache ({human_bytes(need.total)} in all) "
            f"does not fit in {human_bytes(int(HEADROOM * budget))}: each shift re-reads the kept cache instead"
        ),
    )
