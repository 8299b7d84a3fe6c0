"""A llama.cpp context: one KV cache, batched decoding at explicit positions, and the memory API.

Positions are always passed explicitly: the caller (sinkchat's engine) owns the layout of
the cache, and this class keeps no token bookkeeping of its own that could drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from models import llama_log
from models.errors import DecodeError, ModelLoadError
from models.fit import check_context
from models.llama_model import LlamaModel
from models.native import NativeHandle
from models.options import GGML_TYPE_IDS, LoadOptions, default_threads

if TYPE_CHECKING:
    import numpy as np

SEQ = 0
"""sinkchat keeps one sequence per context."""

Logits = Literal["last", "all", "none"]

_FLASH = {"auto": -1, "off": 0, "on": 1}


class LlamaContext(NativeHandle):
    """KV cache plus decoding for one model.  Use from one thread at a time."""

    def __init__(self, model: LlamaModel, options: LoadOptions, *, eval_callback: Any = None) -> None:
        """``eval_callback``: a ``ggml_backend_sched_eval_callback`` that sees every graph node
        (see :mod:`models.attention`); it is kept referenced as long as the context lives."""
        import llama_cpp

        # Before llama.cpp allocates: a CPU cache beyond the RAM gets the process killed without a word.
        check_context(model.info, options, n_gpu_layers=model.n_gpu_layers, weights_loaded=True)
        self._lib = llama_cpp
        self.model = model
        self.options = options
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = options.n_ctx
        params.n_batch = options.n_batch
        params.n_ubatch = options.n_ubatch or options.n_batch
        params.n_seq_max = 1
        threads = options.n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = options.n_threads_batch or threads
        params.flash_attn_type = _FLASH[options.flash_attn]
        params.type_k = GGML_TYPE_IDS[options.type_k]
        params.type_v = GGML_TYPE_IDS[options.type_v]
        if options.swa_full is not None:  # else llama.cpp's own default (a full-size SWA cache)
            params.swa_full = options.swa_full
        params.offload_kqv = options.offload_kqv
        params.no_perf = True
        self._eval_callback = eval_callback
        if eval_callback is not None:
            params.cb_eval = eval_callback
        llama_log.clear()
        ctx = llama_cpp.llama_init_from_model(model.ptr, params)
        if not ctx:
            problems = llama_log.recent_problems()
            detail = llama_log.explain(problems)
            raise ModelLoadError(
                f"could not create a context of {options.n_ctx} tokens for {model.path.name} "
                f"(K cache {options.type_k}, V cache {options.type_v}): try a smaller n_ctx.{detail}"
            )
        self.ptr = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        self.n_batch = options.n_batch
        self.decoded = 0
        """Tokens evaluated by :meth:`decode` so far: what a request really cost, whatever path it took."""
        self.n_threads = threads
        self.n_swa = int(llama_cpp.llama_model_n_swa(model.ptr))
        """The sliding window of the model's SWA layers (0: none)."""
        self.swa_full = bool(params.swa_full)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.n_vocab = model.n_vocab

    # -- decoding ---------------------------------------------------------------------

    def decode(self, tokens: Sequence[int], start: int, logits: Logits = "last") -> None:
        """Evaluate ``tokens`` at positions ``start, start+1, ...`` of the sequence.

        ``logits`` selects which positions keep output logits; with "all", only the
        outputs of the final batch remain readable, so callers pass at most ``n_batch``.
        """
        n = len(tokens)
        batch = self._batch
        for offset in range(0, n, self.n_batch):
            chunk = tokens[offset : offset + self.n_batch]
            for i, token in enumerate(chunk):
                batch.token[i] = token
                batch.pos[i] = start + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = SEQ
                last = offset + i == n - 1
                batch.logits[i] = logits == "all" or (logits == "last" and last)
            batch.n_tokens = len(chunk)
            rc = self._lib.llama_decode(self.ptr, batch)
            if rc != 0:
                problems = llama_log.recent_problems(2)
                detail = f": {' '.join(problems[-1].split())}" if problems else ""  # one line
                raise DecodeError(f"llama_decode failed with code {rc} at position {start + offset}{detail}")
            self.decoded += len(chunk)

    def logits(self, index: int = -1) -> np.ndarray:
        """A copy of the output logits of the ``index``-th output of the last batch (-1: last)."""
        import numpy as np

        ptr = self._lib.llama_get_logits_ith(self.ptr, index)
        if not ptr:
            raise DecodeError(f"no logits at output {index}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def all_logits(self, n: int) -> np.ndarray:
        """A copy of the logits of the last batch's ``n`` outputs, one row per token (decoded with "all")."""
        import numpy as np

        ptr = self._lib.llama_get_logits(self.ptr)
        if not ptr:
            raise DecodeError("no logits from the last batch")
        return np.ctypeslib.as_array(ptr, shape=(n, self.n_vocab)).copy()

    # -- the KV-cache memory API -------------------------------------------------------

    @property
    def can_shift(self) -> bool:
        """False for M-RoPE, SWA without a full-size cache, recurrent models."""
        return bool(self._lib.llama_memory_can_shift(self.memory))

    def seq_rm(self, p0: int, p1: int) -> bool:
        """Remove positions ``[p0, p1)`` (p1 < 0: to the end).  False if a partial removal is impossible."""
        return bool(self._lib.llama_memory_seq_rm(self.memory, SEQ, p0, p1))

    def seq_add(self, p0: int, p1: int, delta: int) -> None:
        """Move positions ``[p0, p1)`` by ``delta``; llama.cpp re-rotates the keys at the next decode."""
        if not self.can_shift:
            # llama.cpp aborts the process when it later applies a shift it cannot do.
            raise DecodeError("this model's KV cache cannot be shifted")
        self._lib.llama_memory_seq_add(self.memory, SEQ, p0, p1, delta)

    def pos_min(self) -> int:
        """Smallest cached position: above 0 only once a sliding-window cache forgot old ones."""
        return int(self._lib.llama_memory_seq_pos_min(self.memory, SEQ))

    def has_history(self, pos: int) -> bool:
        """True when the cache still holds every position a token at ``pos`` attends to.

        A small sliding-window cache reuses the cells of positions out of its window, so
        after cutting its tail it cannot continue from a point whose window is gone
        (llama-server makes the same check before reusing a prompt).
        """
        if not self.n_swa:
            return True
        low = self.pos_min()
        return pos == 0 if low < 0 else low <= max(0, pos - self.n_swa)

    def pos_max(self) -> int:
        """Largest cached position, -1 when empty."""
        return int(self._lib.llama_memory_seq_pos_max(self.memory, SEQ))

    def clear(self) -> None:
        self._lib.llama_memory_clear(self.memory, True)

    # -- sequence state (KV snapshots) ------------------------------------------------

    def save_state(self) -> bytes:
        """The KV cache of the sequence as bytes (only its cells; device memory is copied to the host).

        Restoring it into a context of the same model and cache settings continues the
        sequence without evaluating its tokens again.
        """
        import ctypes

        size = int(self._lib.llama_state_seq_get_size(self.ptr, SEQ))
        buffer = (ctypes.c_uint8 * size)()
        written = int(self._lib.llama_state_seq_get_data(self.ptr, buffer, size, SEQ))
        if written == 0 and size:
            raise DecodeError("llama.cpp could not copy the KV cache of the sequence")
        return bytes(memoryview(buffer)[:written])

    def load_state(self, data: bytes) -> None:
        """Replace the sequence's cache with saved bytes; raises when llama.cpp rejects them.

        llama.cpp checks the layer count, cell count and K/V types; a rejected load leaves
        the sequence empty.
        """
        import ctypes

        self.clear()
        llama_log.clear()
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        read = int(self._lib.llama_state_seq_set_data(self.ptr, buffer, len(data), SEQ))
        if read == 0:
            self.clear()
            problems = llama_log.recent_problems(2)
            detail = f": {' '.join(problems[-1].split())}" if problems else ""  # one line
            raise DecodeError(f"llama.cpp rejected the saved KV cache{detail}")

    def _free(self, ptr: object) -> None:
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(ptr)
