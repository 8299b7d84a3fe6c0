"""Incremental chat-template rendering: the text each new turn adds to the cache.

The cache already holds the history, so a new turn must not re-render and re-evaluate
it.  The text a turn adds is the difference between rendering the history with and
without it.  Some templates render earlier turns differently once a new one follows
(for example they strip reasoning); for those the turn is rendered on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

log = logging.getLogger(__name__)

Message = dict[str, str]
Render = Callable[[Sequence[Message], bool], str]
"""``render(messages, add_generation_prompt) -> text``, the model's own template."""

_SENTINEL = "\ue000sinkchat-reply\ue001"
RECENT_MESSAGES = 4


@dataclass(frozen=True, slots=True)
class UserTurn:
    message: str
    """Template text of the user message itself."""
    generation_prompt: str
    """Template text that opens the assistant's reply (e.g. ``<|im_start|>assistant\\n``)."""


class TurnRenderer:
    """Computes per-turn template text from a full-history ``render`` function."""

    def __init__(self, render: Render) -> None:
        self._render_fn = render

    def _render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        if not messages and not add_generation_prompt:
            return self.implicit_opening
        return self._render_fn(messages, add_generation_prompt)

    @cached_property
    def implicit_opening(self) -> str:
        """What the template puts before the first message when there is no system message.

        Often only BOS, but many templates inject a default system prompt there (SmolLM2,
        Qwen).  It is what the first user turn adds beyond what a later user turn adds.
        """
        user = {"role": "user", "content": _SENTINEL}
        try:
            first = self._render_fn([user], False)
            earlier: list[Message] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
            before, after = self._render_fn(earlier, False), self._render_fn([*earlier, user], False)
        except Exception:
            log.debug("template cannot render a two-turn probe; assuming an empty opening")
            return ""
        later = after[len(before) :] if after.startswith(before) else None
        if later and first.endswith(later):
            return first[: len(first) - len(later)]
        return ""

    def opening(self, system: str | None) -> str:
        """Text that starts the chat: the system message, or the template's implicit opening."""
        return self._render([{"role": "system", "content": system}] if system else [], False)

    @staticmethod
    def _recent(history: Sequence[Message]) -> list[Message]:
        """The system message and the last two exchanges: all a new turn's markup depends on.

        Rendering the whole history would make every turn slower as a chat goes on forever.
        """
        system = [m for m in history[:1] if m["role"] == "system"]
        rest = history[len(system) :]
        start = max(0, len(rest) - RECENT_MESSAGES)
        while start > 0 and rest[start]["role"] != "user":  # templates that check user/assistant alternation
            start -= 1
        return [*system, *rest[start:]]

    def user(self, history: Sequence[Message], content: str) -> UserTurn:
        """Text for a new user message after ``history``, and the reply's opening."""
        history = self._recent(history)
        after = [*history, {"role": "user", "content": content}]
        message = self._delta(history, after)
        closed = self._render(after, False)
        opened = self._render(after, True)
        prompt = opened[len(closed) :] if opened.startswith(closed) else ""
        return UserTurn(message=message, generation_prompt=prompt)

    def closing(self, history: Sequence[Message]) -> str:
        """Text the template puts after an assistant reply (e.g. ``<|im_end|>\\n``)."""
        text = self._render([*self._recent(history), {"role": "assistant", "content": _SENTINEL}], False)
        at = text.rfind(_SENTINEL)
        return text[at + len(_SENTINEL) :] if at >= 0 else ""

    def content_at(self, text: str, content: str, render: Callable[[str], str]) -> int | None:
        """Where ``content`` sits in ``text == render(content)``: found by rendering a sentinel.

        Searching for the content itself could hit the template's own markup (a message
        that reads "user" matches ``<|im_start|>user``).  None when the template alters
        the content (for example trims it).
        """
        probe = render(_SENTINEL)
        at = probe.find(_SENTINEL)
        if at < 0:
            return None
        prefix, suffix = probe[:at], probe[at + len(_SENTINEL) :]
        return at if text == prefix + content + suffix else None

    def _delta(self, before: Sequence[Message], after: Sequence[Message]) -> str:
        old = self._render(before, False)
        new = self._render(after, False)
        if new.startswith(old):
            return new[len(old) :]
        log.debug("chat template re-renders earlier turns; rendering the new turn on its own")
        base = [m for m in before if m["role"] == "system"][:1]
        added = list(after[len(before) :])
        old = self._render(base, False)
        new = self._render([*base, *added], False)
        return new[len(old) :] if new.startswith(old) else new


def alternates(roles: list[str]) -> bool:
    """True for user, assistant, user, assistant ... (whole exchanges, as saved sessions hold them)."""
    return len(roles) % 2 == 0 and all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles))
