"""llama.cpp's sampler chain (in C): penalties, top-k, top-p, min-p, temperature, then a seeded draw."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from models.llama_context import LlamaContext
from models.native import NativeHandle


class SamplingSettings(BaseModel):
    """Sampling knobs for one reply.  ``temperature`` 0 means greedy (deterministic)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_k: int = Field(40, ge=0, description="0 = off")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="1 = off")
    min_p: float = Field(0.05, ge=0.0, lt=1.0, description="0 = off")
    repeat_penalty: float = Field(1.1, gt=0.0, le=5.0, description="1 = off")
    repeat_last_n: int = Field(64, ge=0)
    seed: int | None = Field(None, ge=0, lt=2**32 - 1, description="None = a random seed per chain")


class Sampler(NativeHandle):
    """A sampler chain built from :class:`SamplingSettings`; it remembers recent tokens for the penalty."""

    def __init__(self, settings: SamplingSettings, n_vocab: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.settings = settings
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.ptr = chain
        add = llama_cpp.llama_sampler_chain_add
        s = settings
        if s.repeat_penalty != 1.0 and s.repeat_last_n > 0:
            args = (s.repeat_last_n, s.repeat_penalty, 0.0, 0.0)
            if len(llama_cpp.llama_sampler_init_penalties.argtypes) == 5:  # newer llama.cpp wants n_vocab first
                args = (n_vocab, *args)
            add(chain, llama_cpp.llama_sampler_init_penalties(*args))
        if s.temperature <= 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return
        if s.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        if s.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None else s.seed
        add(chain, llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, ctx: LlamaContext) -> int:
        """Draw the next token from the last output logits (and remember it for the penalty)."""
        return int(self._lib.llama_sampler_sample(self.ptr, ctx.ptr, -1))

    def _free(self, ptr: object) -> None:
        self._lib.llama_sampler_free(ptr)
