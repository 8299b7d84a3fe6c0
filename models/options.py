"""How to load a model and size its context: the options users set, validated once."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

KVCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]

# ggml_type ids (ggml.h) of the KV cache types above.
GGML_TYPE_IDS: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30,
}  # fmt: skip


def default_threads() -> int:
    """Physical cores: decoding is memory-bound, and hyper-threads only add contention."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except Exception:  # pragma: no cover - psutil is a dependency, but never fail on this
        physical = None
    return max(1, physical or os.cpu_count() or 1)


class LoadOptions(BaseModel):
    """llama.cpp model and context parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_ctx: int = Field(4096, ge=16, description="KV-cache size in tokens: the fixed memory budget")
    n_batch: int = Field(512, ge=1, description="most tokens evaluated in one llama_decode call")
    n_ubatch: int | None = Field(None, ge=1, description="physical batch size (default: n_batch)")
    n_threads: int | None = Field(None, ge=1, description="decode threads (default: physical cores)")
    n_threads_batch: int | None = Field(None, ge=1, description="prompt threads (default: n_threads)")
    n_gpu_layers: int | None = Field(
        None,
        ge=-1,
        description="layers offloaded to the GPU; -1 = all, 0 = CPU only, None = all if the build has a GPU",
    )
    flash_attn: Literal["auto", "on", "off"] = "auto"
    type_k: KVCacheType = "f16"
    type_v: KVCacheType = "f16"
    use_mmap: bool = True
    swa_full: bool | None = None
    """Full-size cache for sliding-window-attention layers, so such models can shift.  None: decided
    per model by :func:`models.swa.choose_swa_full` in ``Chat.load`` (llama.cpp's default elsewhere)."""
    offload_kqv: bool = True
