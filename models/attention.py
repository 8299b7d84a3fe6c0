"""Capture the attention weights llama.cpp computes while it evaluates a text.

llama.cpp names each layer's attention probabilities ``kq_soft_max-<layer>`` in its compute
graph (when flash attention is off: flash attention never materialises them).  A context
created with an eval callback is asked about every graph node; asking for these makes the
scheduler stop after each one and hand it over, and :func:`models.ggml_tensor.read_f32`
copies it to the host from whichever backend computed it.

The whole text is evaluated as one micro-batch in an empty cache, so query ``i`` is the
text's token ``i`` and key column ``j`` its token ``j`` (the cache fills from cell 0).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.errors import ModelError
from models.ggml_tensor import read_f32, tensor_name
from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions

if TYPE_CHECKING:
    import numpy as np

SOFTMAX_PREFIX = "kq_soft_max-"
_PAD = 256
"""Context sizes are rounded up to this: llama.cpp pads its KV views the same way."""
MAX_MAP_BYTES = 2 << 30
"""The maps grow with the square of the text: past this, refuse rather than exhaust memory."""


def map_bytes(n_layer: int, n_tokens: int) -> int:
    """Host memory of one text's maps (float32, every layer)."""
    return 4 * n_layer * n_tokens * n_tokens


def max_tokens(n_layer: int) -> int:
    """The longest text whose maps fit in :data:`MAX_MAP_BYTES`."""
    return int((MAX_MAP_BYTES / (4 * n_layer)) ** 0.5)


@dataclass
class AttentionMaps:
    """Head-averaged attention of one text: ``weights[layer, query, key]``, causal, rows sum to 1."""

    tokens: list[int]
    weights: np.ndarray
    """float32, shape ``(n_layer, n_tokens, n_tokens)``."""
    padding_mass: float
    """The largest weight any query gave to cache cells beyond the text (masked: ~0)."""

    @property
    def n_layer(self) -> int:
        return int(self.weights.shape[0])


class _Recorder:
    """The eval callback: keeps each layer's softmax, averaged over heads, cropped to the text."""

    def __init__(self, n_layer: int, n_tokens: int) -> None:
        import numpy as np

        self.n_tokens = n_tokens
        self.weights = np.full((n_layer, n_tokens, n_tokens), np.nan, dtype=np.float32)
        self.seen: set[int] = set()
        self.padding_mass = 0.0
        self.error: BaseException | None = None
        # The C side holds only a raw pointer: this object keeps the trampoline alive.
        self.callback = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)(self._on_node)

    def _on_node(self, tensor: int, ask: bool, _user: int) -> bool:
        try:
            name = tensor_name(tensor)
            wanted = name.startswith(SOFTMAX_PREFIX)
            if ask or not wanted:
                return wanted if ask else True
            self._keep(int(name[len(SOFTMAX_PREFIX) :]), tensor)
        except BaseException as exc:  # an exception must not unwind through C
            if self.error is None:
                self.error = exc
        return True

    def _keep(self, layer: int, tensor: int) -> None:
        probs = read_f32(tensor)  # C order: (streams, heads, queries, cache cells)
        n = self.n_tokens
        if probs.shape[-2] != n or probs.shape[-1] < n:
            raise ModelError(f"layer {layer}: attention shaped {probs.shape}, expected {n} queries over ≥{n} cells")
        mean = probs.reshape(-1, *probs.shape[-2:]).mean(axis=0)
        if mean.shape[1] > n:
            self.padding_mass = max(self.padding_mass, float(mean[:, n:].max()))
        self.weights[layer] = mean[:, :n]
        self.seen.add(layer)


def capture_attention(model: LlamaModel, tokens: Sequence[int], *, threads: int | None = None) -> AttentionMaps:
    """Evaluate ``tokens`` once in a fresh context and return every layer's attention."""
    n = len(tokens)
    if n < 1:
        raise ValueError("no tokens to evaluate")
    if map_bytes(model.n_layer, n) > MAX_MAP_BYTES:
        raise ModelError(
            f"the attention maps of {n:,} tokens over {model.n_layer} layers would take "
            f"{map_bytes(model.n_layer, n) / 2**30:.1f} GiB; evaluate at most {max_tokens(model.n_layer):,} tokens"
        )
    size = -(-n // _PAD) * _PAD
    options = LoadOptions(n_ctx=size, n_batch=size, n_ubatch=size, n_threads=threads, flash_attn="off")
    recorder = _Recorder(model.n_layer, n)
    with LlamaContext(model, options, eval_callback=recorder.callback) as ctx:
        ctx.decode(list(tokens), 0, logits="last")
    if recorder.error is not None:
        raise recorder.error
    missing = sorted(set(range(model.n_layer)) - recorder.seen)
    if len(missing) == model.n_layer:
        raise ModelError(
            f"{model.name}: llama.cpp computed no attention probabilities ('{SOFTMAX_PREFIX}*'); "
            "its architecture may not use standard attention"
        )
    if missing:
        raise ModelError(f"{model.name}: no attention seen for layers {missing}")
    return AttentionMaps(list(tokens), recorder.weights, recorder.padding_mass)
