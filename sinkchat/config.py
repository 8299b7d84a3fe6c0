"""The sink-cache settings of a chat, validated at the boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MIN_WINDOW = 32
"""Fewest unpinned cache slots a chat needs to hold a turn and keep generating."""


class SinkSettings(BaseModel):
    """How the cache is kept within ``n_ctx``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sink_tokens: int = Field(4, ge=0, le=256, description="first tokens always kept (attention sinks), after BOS")
    keep_system_prompt: bool = Field(True, description="pin the whole system prompt, not only the sinks")
    discard: int | None = Field(
        None, ge=1, description="tokens a shift aims to free (default: a quarter of the window)"
    )
    aligned: bool = Field(
        True,
        description="evict whole oldest exchanges; false cuts at any token, as llama.cpp does (for comparison)",
    )
    pin_bos: bool = Field(True, description="keep BOS as a sink; false with 0 sinks is plain window attention")
