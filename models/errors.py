"""Errors a user can cause or fix; their messages are shown as they are, without a traceback."""

from __future__ import annotations


class ModelError(Exception):
    """Base of every user-facing model problem."""


class ModelFileError(ModelError):
    """The model file is missing, unreadable, not a GGUF file, or damaged."""


class UnsupportedModelError(ModelError):
    """A valid GGUF that this llama.cpp build cannot run (unknown architecture, no decoder)."""


class ModelLoadError(ModelError):
    """llama.cpp refused to load the model or create its context (often: not enough memory)."""


class ContextTooLargeError(ModelLoadError):
    """The KV cache and compute buffers of the asked ``n_ctx`` would not fit the memory there is."""


class DecodeError(ModelError):
    """llama.cpp failed to evaluate a batch of tokens."""
