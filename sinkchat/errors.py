"""Errors the user can cause or fix: shown as a message, never as a traceback."""

from __future__ import annotations


class SinkchatError(Exception):
    """Base of sinkchat's user-facing errors."""


class ContextTooSmallError(SinkchatError):
    """The pinned prefix (sinks + system prompt) leaves too little room in the cache."""


class BusyError(SinkchatError):
    """A reply is already being generated on this chat."""


class NoChatTemplateError(SinkchatError):
    """The model cannot chat turn by turn: a base model without a chat template, or a template sinkchat cannot follow."""
