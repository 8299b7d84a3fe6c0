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

from models.fit import HEADROOM, KV_BYTES, Hardware, context_need, detect_hardware, estimate, swa_cells
from models.gguf_meta import GGUFInfo
from models.units import human_bytes


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


def choose_swa_full(
    info: GGUFInfo,
    n_ctx: int,
    *,
    n_ubatch: int = 512,
    type_k: str = "f16",
    type_v: str = "f16",
    flash_attn: bool = True,
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
    full = context_need(
        info.metadata, arch, n_ctx, n_ubatch=n_ubatch, type_k=type_k, type_v=type_v, flash_attn=flash_attn
    )
    if full is not None:
        compact = context_need(
            info.metadata,
            arch,
            n_ctx,
            n_ubatch=n_ubatch,
            type_k=type_k,
            type_v=type_v,
            flash_attn=flash_attn,
            swa_full=False,
        )
        assert compact is not None
        extra = full.kv_cache - compact.kv_cache
        need = info.file_size + full.total  # the weights stay in memory beside the cache
    else:  # no layer shapes in the metadata: the rough estimate of the file, for every layer
        bytes_per_element = (KV_BYTES.get(type_k, 2.0) + KV_BYTES.get(type_v, 2.0)) / 2
        rough = estimate(info.file_size, n_ctx, kv_bytes_per_element=bytes_per_element)
        extra = int(rough.kv_cache * (1 - small / n_ctx))  # at most: the SWA layers' share is below 1
        need = rough.total
    budget = (hardware or detect_hardware()).budget
    if need <= HEADROOM * budget:
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
            f"sliding window {window} < n_ctx {n_ctx}, and a full-size SWA cache ({human_bytes(need)} in all) "
            f"does not fit in {human_bytes(int(HEADROOM * budget))}: each shift re-reads the kept cache instead"
        ),
    )
