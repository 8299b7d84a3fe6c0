"""Will a GGUF file fit this machine?  Memory estimates and the recommended quantization.

A model needs its weights, its KV cache at the chosen ``n_ctx``, and compute buffers.
The KV cache is exact when the GGUF's layer and head counts are known (a local file);
for a file not downloaded yet it is estimated from the parameter count, conservatively
for the grouped-query attention of current models.  The budget is the free memory of the
largest GPU when llama.cpp has one, else the available RAM (as LM Studio does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

Fit = Literal["fits", "tight", "too big"]

HEADROOM = 0.85
"""Share of the budget a model may take and still "fit": the OS, the app and other programs need the rest."""
PREFERRED = "Q4_K_M"
"""The usual best trade-off of size and quality; llama.cpp's ``-hf`` picks it first too."""

_BYTES_PER_PARAM = {"F32": 4.0, "F16": 2.0, "BF16": 2.0, "Q8_0": 1.06, "Q6_K": 0.82, "Q5_K_M": 0.71, "Q4_K_M": 0.6}


class KVShape(BaseModel):
    n_layer: int
    n_kv_heads: int
    head_dim: int

    def bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        return 2 * self.n_layer * self.n_kv_heads * self.head_dim * bytes_per_element  # K and V


class Estimate(BaseModel):
    weights: int
    kv_cache: int
    overhead: int
    exact_kv: bool

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


class GPUMemory(BaseModel):
    name: str
    free: int
    total: int


class Hardware(BaseModel):
    ram_available: int
    gpus: list[GPUMemory] = []

    @property
    def budget(self) -> int:
        """What one model can use: the largest GPU's free memory, else the available RAM."""
        return max((g.free for g in self.gpus), default=self.ram_available)

    @property
    def where(self) -> str:
        return max(self.gpus, key=lambda g: g.free).name if self.gpus else "RAM"


def kv_shape(metadata: Mapping[str, Any], architecture: str | None) -> KVShape | None:
    """The KV-cache shape from GGUF metadata (``llama.block_count``, ``llama.attention.head_count_kv`` ...)."""
    if not architecture:
        return None

    def get(key: str) -> int | None:
        value = metadata.get(f"{architecture}.{key}")
        if isinstance(value, list):  # per-layer head counts in some architectures
            value = max(value) if value else None
        return int(value) if isinstance(value, (int, float)) else None

    n_layer, heads, embd = get("block_count"), get("attention.head_count"), get("embedding_length")
    kv_heads = get("attention.head_count_kv") or heads
    head_dim = get("attention.key_length") or (embd // heads if embd and heads else None)
    if not (n_layer and kv_heads and head_dim):
        return None
    return KVShape(n_layer=n_layer, n_kv_heads=kv_heads, head_dim=head_dim)


def estimate(
    size_bytes: int,
    n_ctx: int,
    *,
    shape: KVShape | None = None,
    parameters: int | None = None,
    quant: str | None = None,
    kv_bytes_per_element: float = 2.0,
) -> Estimate:
    """Memory to run a model file with an ``n_ctx``-token cache (f16 KV unless told otherwise)."""
    if shape is not None:
        kv = shape.bytes_per_token(kv_bytes_per_element) * n_ctx
    else:
        params = parameters or size_bytes / _BYTES_PER_PARAM.get(quant or "", 0.6)
        # 24 KB/token at 0.1B parameters, ~110 KB at 8B, ~330 KB at 70B: current GQA models stay below.
        per_token = max(24_000.0, 40_000.0 * math.sqrt(params / 1e9)) * kv_bytes_per_element / 2
        kv = per_token * n_ctx
    overhead = int(0.05 * size_bytes + 64 * 2**20 + n_ctx * 2_000)  # compute buffers grow with the batch and n_ctx
    return Estimate(weights=size_bytes, kv_cache=int(kv), overhead=overhead, exact_kv=shape is not None)


def fit(need: int, hardware: Hardware) -> Fit:
    budget = hardware.budget
    if need <= HEADROOM * budget:
        return "fits"
    if need <= budget or (hardware.gpus and need <= HEADROOM * hardware.ram_available):
        return "tight"  # at the edge, or only with some layers left on the CPU
    return "too big"


def recommend(quants: Sequence[str | None], sizes: Sequence[int], fits: Sequence[Fit]) -> int | None:
    """Index of the file to preselect: Q4_K_M when it fits, else the largest that fits, else the smallest tight one."""
    fitting = [i for i, f in enumerate(fits) if f == "fits"]
    for i in fitting:
        if (quants[i] or "").upper() == PREFERRED:
            return i
    if fitting:
        return max(fitting, key=lambda i: sizes[i])
    tight = [i for i, f in enumerate(fits) if f == "tight"]
    return min(tight, key=lambda i: sizes[i]) if tight else None


def detect_hardware() -> Hardware:
    """Available RAM (psutil) and the free memory of each GPU llama.cpp can use."""
    import psutil

    from models.device import gpu_memory

    return Hardware(
        ram_available=int(psutil.virtual_memory().available),
        gpus=[GPUMemory(name=name, free=free, total=total) for name, free, total in gpu_memory()],
    )
