"""Will a GGUF file fit this machine?  Memory estimates and the recommended quantization.

A model needs its weights, its KV cache at the chosen ``n_ctx``, and compute buffers.
The KV cache is exact when the GGUF's layer and head counts are known (a local file);
for a file not downloaded yet it is estimated from the parameter count, conservatively
for the grouped-query attention of current models.  The budget is the free memory of the
largest GPU when llama.cpp has one, else the available RAM (as LM Studio does).

:func:`check_context` applies the same budget to a context about to be created, from the
exact layer shapes and llama.cpp's compute buffers, and refuses one that cannot fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from models.errors import ContextTooLargeError
from models.units import human_bytes

if TYPE_CHECKING:
    from models.gguf_meta import GGUFInfo
    from models.options import LoadOptions

Fit = Literal["fits", "tight", "too big"]

HEADROOM = 0.85
"""Share of the budget a model may take and still "fit": the OS, the app and other programs need the rest."""
PREFERRED = "Q4_K_M"
"""The usual best trade-off of size and quality; llama.cpp's ``-hf`` picks it first too."""

_BYTES_PER_PARAM = {"F32": 4.0, "F16": 2.0, "BF16": 2.0, "Q8_0": 1.06, "Q6_K": 0.82, "Q5_K_M": 0.71, "Q4_K_M": 0.6}

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

# One layer in N attends to the whole context, the others to the sliding window (llama.cpp's
# ``set_swa_pattern`` per architecture); unknown ones are taken as every other layer, the
# smallest share of window layers known, so the estimate errs on the large side.
_SWA_PATTERN = {"gemma3": 6, "gemma3n": 5, "cohere2": 4, "exaone4": 4, "llama4": 4}
_SWA_PATTERN_DEFAULT = 2


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


def swa_cells(window: int, n_ubatch: int) -> int:
    """Cells llama.cpp gives a small SWA cache: the window plus one batch, padded to 256."""
    return -(-(window + n_ubatch) // 256) * 256


class ContextNeed(BaseModel):
    """What llama.cpp allocates for one context, besides the weights."""

    n_ctx: int
    kv_cache: int
    compute: int

    @property
    def total(self) -> int:
        return self.kv_cache + self.compute


def _ints(metadata: Mapping[str, Any], key: str) -> list[int] | None:
    """A number, or a short per-layer list of them, from the metadata."""
    value = metadata.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [int(value)]
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return [int(v) for v in value]
    return None


def _swa_layers(metadata: Mapping[str, Any], architecture: str, n_layer: int) -> list[bool]:
    """Which layers attend to the sliding window only (llama.cpp: layer ``il`` unless ``il % n == n - 1``)."""
    pattern = metadata.get(f"{architecture}.attention.sliding_window_pattern")
    if isinstance(pattern, list) and len(pattern) == n_layer and all(isinstance(v, bool) for v in pattern):
        return list(pattern)
    every = pattern if isinstance(pattern, int) and not isinstance(pattern, bool) and pattern > 0 else None
    every = every or _SWA_PATTERN.get(architecture, _SWA_PATTERN_DEFAULT)
    return [il % every < every - 1 for il in range(n_layer)]


def context_need(
    metadata: Mapping[str, Any],
    architecture: str | None,
    n_ctx: int,
    *,
    n_ubatch: int = 512,
    type_k: str = "f16",
    type_v: str = "f16",
    flash_attn: bool = True,
    swa_full: bool = True,
) -> ContextNeed | None:
    """Memory of an ``n_ctx``-token context from GGUF metadata (None when it lacks the layer shapes).

    The KV cache holds K and V of every layer's KV heads for ``n_ctx`` cells, or for
    the window plus a batch in the sliding-window layers of a small SWA cache.  The
    compute buffers hold one micro-batch's logits or, without flash attention, its scores
    against the whole cache when those are larger (llama.cpp reuses one buffer), plus the
    activations.  Within 10% of what llama.cpp reports for SmolLM2 and Gemma 3 270M.
    """
    if not architecture:
        return None

    def ints(key: str) -> list[int] | None:
        return _ints(metadata, f"{architecture}.{key}")

    n_layer = (ints("block_count") or [0])[0]
    heads = ints("attention.head_count")
    embd = (ints("embedding_length") or [0])[0]
    if n_layer <= 0 or not heads or embd <= 0 or max(heads) <= 0:
        return None
    n_head = max(heads)
    kv_heads = ints("attention.head_count_kv") or heads
    if len(kv_heads) != n_layer:  # one count for every layer (a per-layer list gives 0 to recurrent layers)
        kv_heads = [max(kv_heads)] * n_layer
    key_length = (ints("attention.key_length") or [embd // n_head])[0]
    value_length = (ints("attention.value_length") or [embd // n_head])[0]
    per_head = KV_BYTES.get(type_k, 2.0) * key_length + KV_BYTES.get(type_v, 2.0) * value_length
    n_ubatch = max(1, min(n_ubatch, n_ctx))
    window = metadata.get(f"{architecture}.attention.sliding_window")
    if isinstance(window, int) and window > 0 and not swa_full:
        small = min(n_ctx, swa_cells(window, n_ubatch))
        cells = [small if swa else n_ctx for swa in _swa_layers(metadata, architecture, n_layer)]
    else:
        cells = [n_ctx] * n_layer
    kv = sum(h * per_head * c for h, c in zip(kv_heads, cells, strict=True))

    tokens = metadata.get("tokenizer.ggml.tokens")
    n_vocab = (ints("vocab_size") or [0])[0] or (
        tokens["array_len"] if isinstance(tokens, dict) else len(tokens) if isinstance(tokens, list) else 0
    )
    n_ff = max(ints("feed_forward_length") or [4 * embd])
    logits = 4 * n_ubatch * n_vocab
    scores = 0 if flash_attn else n_ubatch * n_ctx * (4 * n_head + 4)  # f32 scores of every head, and the mask
    compute = max(logits, scores) + 8 * n_ubatch * (embd + n_ff)
    return ContextNeed(n_ctx=n_ctx, kv_cache=int(kv), compute=int(compute))


@dataclass(frozen=True)
class _Place:
    """Where part of a context goes: what it needs there, and how much of the memory there it may take."""

    where: str
    budget: int
    weights: int
    kv_cache: int
    compute: int

    @property
    def need(self) -> int:
        return self.weights + self.kv_cache + self.compute

    @property
    def fits(self) -> bool:
        return self.need <= HEADROOM * self.budget


def _options_need(info: GGUFInfo, options: LoadOptions, n_ctx: int) -> ContextNeed | None:
    return context_need(
        info.metadata,
        info.architecture,
        n_ctx,
        n_ubatch=options.n_ubatch or options.n_batch,
        type_k=options.type_k,
        type_v=options.type_v,
        flash_attn=options.flash_attn != "off",  # "auto" turns it on wherever the backend has it (every CPU)
        swa_full=True if options.swa_full is None else options.swa_full,  # llama.cpp's default
    )


def _places(
    need: ContextNeed,
    weights: int,
    options: LoadOptions,
    *,
    offloaded: float,
    hardware: Hardware,
) -> list[_Place]:
    """The parts of a context on the largest GPU (what is offloaded) and in RAM."""
    ram_weights = 0 if options.use_mmap else int(weights * (1 - offloaded))  # mapped weights are the file's pages
    if not offloaded or not hardware.gpus:
        return [_Place("available RAM", hardware.ram_available, ram_weights, need.kv_cache, need.compute)]
    gpu = max(hardware.gpus, key=lambda g: g.free)
    gpu_kv = int(need.kv_cache * offloaded) if options.offload_kqv else 0
    return [
        _Place(f"free memory of {gpu.name}", gpu.free, int(weights * offloaded), gpu_kv, need.compute),
        _Place("available RAM", hardware.ram_available, ram_weights, need.kv_cache - gpu_kv, 0),
    ]


MIN_SUGGESTED_CTX = 256
"""Below this a suggestion would not help: the model does not fit at all."""


def check_context(
    info: GGUFInfo,
    options: LoadOptions,
    *,
    n_gpu_layers: int | None = None,
    weights_loaded: bool = False,
    hardware: Hardware | None = None,
) -> ContextNeed | None:
    """Refuse an ``n_ctx`` whose KV cache and compute buffers cannot fit, before llama.cpp allocates them.

    A CPU context beyond the available RAM is not refused by llama.cpp: the kernel kills
    the process without a word while the cache is cleared.  The budget is the share
    :data:`HEADROOM` of the available RAM, or of the largest GPU's free memory for what
    is offloaded (``n_gpu_layers``: -1 or None all layers, 0 none).  ``weights_loaded``:
    the model is in memory already, so only the context is added.  Returns the estimate
    (None when the metadata lacks the layer shapes) or raises :class:`ContextTooLargeError`.
    """
    need = _options_need(info, options, options.n_ctx)
    if need is None:
        return None
    hardware = hardware or detect_hardware()
    n_layer = max(1, (_ints(info.metadata, f"{info.architecture}.block_count") or [1])[0])
    if not hardware.gpus or n_gpu_layers == 0:
        offloaded = 0.0
    else:
        offloaded = 1.0 if n_gpu_layers is None or n_gpu_layers < 0 else min(1.0, n_gpu_layers / n_layer)
    weights = 0 if weights_loaded else info.file_size

    def places(n_ctx: int) -> list[_Place]:
        other = need if n_ctx == options.n_ctx else _options_need(info, options, n_ctx)
        assert other is not None  # the same metadata as the asked size's
        return _places(other, weights, options, offloaded=offloaded, hardware=hardware)

    too_big = next((p for p in places(options.n_ctx) if not p.fits), None)
    if too_big is None:
        return need
    suggestion = _largest_fitting(lambda n: all(p.fits for p in places(n)), options.n_ctx)
    raise ContextTooLargeError(_refusal(info, options.n_ctx, too_big, suggestion))


def _largest_fitting(fits: Callable[[int], bool], n_ctx: int) -> int | None:
    """The largest round ``n_ctx`` below the asked one that fits (None: not even a small one does)."""
    if not fits(MIN_SUGGESTED_CTX):
        return None
    low, high = MIN_SUGGESTED_CTX, n_ctx  # fits(low), not fits(high): the need grows with n_ctx
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    step = 1024 if low >= 4096 else 256
    return max(MIN_SUGGESTED_CTX, low // step * step)


def _refusal(info: GGUFInfo, n_ctx: int, place: _Place, suggestion: int | None) -> str:
    parts = [f"KV cache {human_bytes(place.kv_cache)}"]
    if place.compute:
        parts.append(f"compute buffers {human_bytes(place.compute)}")
    if place.weights:
        parts.insert(0, f"weights {human_bytes(place.weights)}")
    advice = (
        f"choose n_ctx {suggestion} or less"
        if suggestion is not None
        else f"not even {MIN_SUGGESTED_CTX} tokens fit: free some memory or choose a smaller model"
    )
    return (
        f"a context of {n_ctx} tokens for {info.path.name} needs about {human_bytes(place.need)} "
        f"({' + '.join(parts)}), more than the {human_bytes(HEADROOM * place.budget)} sinkchat allows itself "
        f"({HEADROOM:.0%} of {human_bytes(place.budget)} {place.where}); {advice}"
    )


def detect_hardware() -> Hardware:
    """Available RAM (psutil) and the free memory of each GPU llama.cpp can use."""
    import psutil

    from models.device import gpu_memory

    return Hardware(
        ram_available=int(psutil.virtual_memory().available),
        gpus=[GPUMemory(name=name, free=free, total=total) for name, free, total in gpu_memory()],
    )
