"""How a chat template lays out a conversation, learned once by rendering probe chats.

sinkchat never re-renders and re-reads the history: each turn's tokens are appended to the
cache and old exchanges are evicted whole.  That is only right if the cache then reads
exactly as the model's own template renders [system prompt + the exchanges still cached
+ the new message].  Templates differ in where they put things:

- the markup around user messages and replies, and a generation prompt that may differ
  from how an earlier reply opens (DeepSeek-R1 opens the live reply with ``<think>``);
- earlier replies re-rendered: reasoning stripped (Qwen 3, DeepSeek-R1), content trimmed
  (Llama 3, Gemma); sinkchat rewrites a finished reply into that form;
- the system prompt: its own block first (most), folded into the first user turn (Gemma
  3), put into the *last* user message (Mistral v3 and Nemo), refused (Gemma 2) or
  dropped.  Whenever it is not its own block, sinkchat folds it into the oldest cached
  user turn and pins it there: eviction then drops the next turn's opening markup with the
  old exchanges, so the cache still reads as the template's rendering of a chat that
  starts with that turn.  For last-user templates this is Mistral's earlier placement
  (and llama.cpp's own non-Jinja formatting): the nearest safe choice, said in ``notes``.
- a trailing end-of-document token after a finished chat (Phi: ``<|endoftext|>``), which
  must not sit between turns.

The probes render chats whose contents are sentinels (private-use characters no template
rewrites), find them, and read the markup between.  :meth:`ChatFormat.check` then renders
realistic chats both ways and compares them; a template that cannot be followed exactly
raises :class:`ChatFormatError` rather than quietly feeding the model a malformed chat.
Pure logic: it only needs the template's ``render(messages, add_generation_prompt)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sinkchat.errors import SinkchatError
from sinkchat.turns import Message

Render = Callable[[Sequence[Message], bool], str]
"""``render(messages, add_generation_prompt) -> text``: the model's own template."""

Placement = Literal["native", "first_user", "last_user", "refused", "ignored"]
"""Where the template puts the system prompt (see the module docstring)."""

SYSTEM_SEPARATOR = "\n\n"
"""Between a folded system prompt and the user's text, where the template does not say (Gemma 3's own choice)."""


def _sentinel(k: int) -> str:
    return f"\ue000{k}\ue001"


U1, A1, U2, A2, U3, A3, SS = (_sentinel(k) for k in range(7))


class ChatFormatError(SinkchatError):
    """The chat template cannot be followed turn by turn (its markup depends on more than the turn)."""


Span = tuple[str, bool]
"""A piece of text to feed and whether it is literal (typed or generated: special markers stay text)."""


@dataclass(frozen=True, slots=True)
class UserTurn:
    """A user message as the cache holds it: opening markup, then the rest, then the reply's opening."""

    open: str
    """Opening markup: an eviction opener in folded chats (see :class:`sinkchat.layout.Segment`)."""
    body: tuple[Span, ...]
    generation: str

    @property
    def text(self) -> str:
        return self.open + "".join(text for text, _ in self.body)


@dataclass(frozen=True, slots=True)
class ReplyForm:
    """A finished reply as the template renders it once a later message follows."""

    open: str
    content: str
    close: str

    @property
    def spans(self) -> tuple[Span, ...]:
        return ((self.open, False), (self.content, True), (self.close, False))


@dataclass(frozen=True, slots=True)
class Opening:
    """What starts the cache; ``folds`` when it ends with the first user turn's opening markup."""

    spans: tuple[Span, ...]
    folds: bool

    @property
    def text(self) -> str:
        return "".join(text for text, _ in self.spans)


def markup_prefix(a: str, b: str) -> str:
    """The longest common prefix of ``a`` and ``b`` that does not end inside a ``<...>`` or ``[...]`` marker.

    ``<|end|>\\n<|endoftext|>`` and ``<|end|>\\n<|user|>`` share ``<|end|>\\n<|``: the
    half marker belongs to neither.
    """
    n = 0
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    prefix = a[:n]
    for open_, close in (("<", ">"), ("[", "]")):
        at = prefix.rfind(open_)
        if at >= 0 and prefix.find(close, at) < 0 and n < max(len(a), len(b)):
            prefix = prefix[:at]
    return prefix


def _locate(text: str, marks: Sequence[str]) -> list[int]:
    """Start of each mark in ``text``, in order; each must appear exactly once."""
    found = []
    for mark in marks:
        if text.count(mark) != 1:
            raise ChatFormatError("the template repeats or drops message contents")
        found.append(text.index(mark))
    if found != sorted(found):
        raise ChatFormatError("the template reorders messages")
    return found


def _user(content: str) -> Message:
    return {"role": "user", "content": content}


def _assistant(content: str) -> Message:
    return {"role": "assistant", "content": content}


def _system(content: str) -> Message:
    return {"role": "system", "content": content}


class ChatFormat:
    """The markup a template puts around each kind of message, learned from probe renderings."""

    def __init__(self, render: Render) -> None:
        self._render = render
        self.notes: list[str] = []
        """What sinkchat does differently from a literal full rendering, in words for the user."""
        probe = [_user(U1), _assistant(A1), _user(U2), _assistant(A2), _user(U3)]
        try:
            text = render(probe, True)
            closed = render(probe, False)
            finished = render([*probe, _assistant(A3)], False)
        except SinkchatError:
            raise
        except Exception as exc:  # a template error is the template's, said as such
            raise ChatFormatError(f"the chat template cannot render a plain chat: {exc}") from exc
        u1, a1, u2, a2, u3 = _locate(text, [U1, A1, U2, A2, U3])
        user_to_reply = text[u1 + len(U1) : a1]
        reply_to_user = text[a1 + len(A1) : u2]
        if text[u2 + len(U2) : a2] != user_to_reply or text[a2 + len(A2) : u3] != reply_to_user:
            raise ChatFormatError("the template's markup changes from one exchange to the next")
        head = text[: u3 + len(U3)]
        tail = text[u3 + len(U3) :]
        if not closed.startswith(head):
            raise ChatFormatError("the template renders earlier turns differently without a generation prompt")
        closed_tail = closed[len(head) :]
        self.user_close = markup_prefix(closed_tail, tail)
        self.end = closed_tail[len(self.user_close) :]
        """Text a rendering adds only at its very end (Phi's ``<|endoftext|>``); never cached between turns."""
        self.generation = tail[len(self.user_close) :]
        if not user_to_reply.startswith(self.user_close):
            raise ChatFormatError("the template closes a user message differently when a reply follows")
        self.reply_open = user_to_reply[len(self.user_close) :]
        after_reply = finished[finished.index(A3) + len(A3) :]
        self.reply_close = markup_prefix(after_reply, reply_to_user)
        self.user_open = reply_to_user[len(self.reply_close) :]
        before = text[:u1]
        if not before.endswith(self.user_open):
            raise ChatFormatError("the template opens the first user message differently from later ones")
        self.base_opening = before[: len(before) - len(self.user_open)]
        """What starts a chat without a system prompt: BOS, and a default system prompt some templates inject."""
        self._user_head = text[: a1 + len(A1)] + reply_to_user
        """How the probe ``[U1, A1, content]`` renders before the content."""
        self._reply_head = text[: u1 + len(U1)] + user_to_reply
        self._reply_tail = reply_to_user + U2 + tail
        """How the probe ``[U1, content, U2]`` renders around the content."""
        self.placement, self.separator = self._system_placement(probe)

    # -- learning ------------------------------------------------------------------------

    def _system_placement(self, probe: list[Message]) -> tuple[Placement, str]:
        try:
            text = self._render([_system(SS), *probe], True)
        except Exception:
            self.notes.append(
                "the chat template refuses a system prompt; sinkchat puts it at the start of the oldest "
                "cached user message and keeps it there"
            )
            return "refused", SYSTEM_SEPARATOR
        if SS not in text:
            self.notes.append(
                "the chat template drops the system prompt; sinkchat puts it at the start of the oldest "
                "cached user message and keeps it there"
            )
            return "ignored", SYSTEM_SEPARATOR
        at, u1, u3 = text.index(SS), text.index(U1), text.index(U3)
        if at < u1:
            before = text[:u1]
            if before.endswith(self.user_open) and at + len(SS) <= len(before) - len(self.user_open):
                return "native", ""
            return "first_user", before[at + len(SS) :]
        if at > text.index(A2) and at < u3:
            self.notes.append(
                "the chat template puts the system prompt into the newest user message; sinkchat keeps it "
                "in the oldest cached one instead (pinned, as earlier Mistral templates and llama.cpp's own "
                "formatting do), so it is never evicted and history is never read again"
            )
            return "last_user", text[at + len(SS) : u3]
        raise ChatFormatError("the chat template puts the system prompt in the middle of the chat")

    @property
    def folds_system(self) -> bool:
        """True when the system prompt lives inside the first cached user turn, not in a block of its own."""
        return self.placement != "native"

    # -- rendering pieces ----------------------------------------------------------------

    def opening(self, system: str | None, *, pin_system: bool = True) -> Opening:
        """What starts the cache.

        With a folding template and a pinned system prompt, this ends with the first user
        turn's opening markup and the system prompt, so that turn's content follows directly.
        """
        if not system or (self.folds_system and not pin_system):
            return Opening(((self.base_opening, False),), folds=False)
        before, text, after = self._before_first_user(system)
        if self.placement != "native":
            return Opening(((before, False), (text, True), (after, False)), folds=True)
        if not after.endswith(self.user_open):
            raise ChatFormatError("the template opens the first user message differently after a system prompt")
        after = after[: len(after) - len(self.user_open)]
        return Opening(((before, False), (text, True), (after, False)), folds=False)

    def _before_first_user(self, system: str) -> tuple[str, str, str]:
        """Everything before the first user's content, with the system prompt where it goes.

        Split as (markup before, the system prompt as rendered, markup after): found by
        rendering a sentinel system prompt first, so a prompt that reads like the markup
        (``system``) cannot be mistaken for it.
        """

        def render(prompt: str) -> str:
            if self.placement in ("native", "first_user", "last_user"):
                text = self._render([_system(prompt), _user(U1)], True)
            else:
                text = self._render([_user(prompt + self.separator + U1)], True)
            return text[: text.index(U1)]

        probe, real = render(SS), render(system)
        at = probe.index(SS)
        before, after = probe[:at], probe[at + len(SS) :]
        if not (real.startswith(before) and real.endswith(after) and len(real) >= len(before) + len(after)):
            raise ChatFormatError("the template changes its markup with the system prompt's text")
        return before, real[len(before) : len(real) - len(after)], after

    def user(self, content: str, *, open: bool = True, system: str | None = None) -> UserTurn:
        """A user message after earlier exchanges, or right after pins that already open it (``open=False``).

        ``system`` folds an unpinned system prompt into this turn (the first of a chat
        whose template does not give the system prompt a block of its own): it is then
        evicted with the turn.
        """
        body: tuple[Span, ...] = ((self._user_content(content), True), (self.user_close, False))
        open_ = self.user_open
        if system and self.folds_system:
            before, text, after = self._before_first_user(system)
            if not before.startswith(self.base_opening):
                raise ChatFormatError("the template's opening changes with the system prompt")
            open_ = before[len(self.base_opening) :]
            body = ((text, True), (after, False), *body)
        return UserTurn(open=open_ if open else "", body=body, generation=self.generation)

    def _user_content(self, content: str) -> str:
        """The content as the template renders it (some trim it)."""
        text = self._render([_user(U1), _assistant(A1), _user(content)], True)
        return _middle(text, self._user_head, self.user_close + self.generation, content)

    def reply(self, content: str) -> ReplyForm:
        """A finished reply as the template renders it in history (reasoning stripped, trimmed ...)."""
        text = self._render([_user(U1), _assistant(content), _user(U2)], True)
        body = _middle(text, self._reply_head, self._reply_tail, content)
        return ReplyForm(open=self.reply_open, content=body, close=self.reply_close)

    # -- the reference ---------------------------------------------------------------------

    def reference(self, system: str | None, exchanges: Sequence[tuple[str, str]], next_user: str) -> str:
        """The template's own rendering of what the cache must hold when the next reply starts.

        For native and first-user templates that is the rendering of the chat's own
        messages.  Where sinkchat places the system prompt itself (last-user, refused,
        dropped), it is the documented equivalent: the system prompt, the separator, then
        the oldest cached user message as the template renders it, as one message.
        """
        messages: list[Message] = []
        for user, reply in exchanges:
            messages += [_user(user), _assistant(reply)]
        messages.append(_user(next_user))
        if not system:
            return self._render(messages, True)
        if self.placement in ("native", "first_user"):
            return self._render([_system(system), *messages], True)
        # Only the message is that message's content: a template that trims must not eat the
        # separator of a blank message, so the content goes in after the rendering.
        body = self._user_content(messages[0]["content"])
        messages[0] = _user(system + self.separator + U1)
        return self._render(messages, True).replace(U1, body)

    def assemble(self, system: str | None, exchanges: Sequence[tuple[str, str]], next_user: str) -> str:
        """What sinkchat's pieces add up to for the same chat (pinned system prompt)."""
        opening = self.opening(system)
        text = opening.text
        open_ = not opening.folds
        for user, reply in exchanges:
            text += self.user(user, open=open_).text
            text += "".join(piece for piece, _ in self.reply(reply).spans)
            open_ = True
        turn = self.user(next_user, open=open_)
        return text + turn.text + turn.generation

    def check(self) -> None:
        """Raise :class:`ChatFormatError` unless the learned pieces reproduce the template exactly."""
        exchanges = [
            ("  Hello there!  ", "Hi! How can I help?\n"),
            ("What is 2 + 2?\nBe brief.", "<think>\nSimple sum.\n</think>\n\n4."),
            ("Thanks", "  You're welcome.  "),
        ]
        for system in (None, "You are a terse assistant."):
            for n in range(len(exchanges) + 1):
                mine = self.assemble(system, exchanges[:n], "And now?")
                theirs = self.reference(system, exchanges[:n], "And now?")
                if mine != theirs:
                    raise ChatFormatError(
                        f"sinkchat cannot reproduce this chat template turn by turn ({_first_difference(mine, theirs)})"
                    )


def _middle(text: str, head: str, tail: str, fallback: str) -> str:
    """``text`` without ``head`` and ``tail``; ``fallback`` when it is not framed by them."""
    if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
        return text[len(head) : len(text) - len(tail)]
    return fallback


def _first_difference(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return f"at character {n}: {a[n : n + 40]!r} instead of {b[n : n + 40]!r}"
