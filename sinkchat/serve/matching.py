"""Recognising a conversation from the messages an OpenAI client sends.

Clients are stateless: each request carries the whole history.  A conversation is known
by a digest of its system prompt and exchanges, so a request is matched to the saved
session it extends in one dictionary lookup per exchange, without reading any cache.
Text is compared with surrounding whitespace stripped, because clients trim replies.
Pure logic: no model, no server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sinkchat.serve.protocol import ApiError, ChatMessage, unsupported

Pair = tuple[str, str]


@dataclass(frozen=True)
class Turn:
    """A chat request as a conversation: system prompt, finished exchanges, and the new user message."""

    system: str | None
    history: tuple[Pair, ...]
    user: str

    def messages(self) -> list[dict[str, str]]:
        """The finished exchanges as chat messages."""
        return pair_messages(self.history)


def pair_messages(pairs: Iterable[Pair]) -> list[dict[str, str]]:
    """Exchanges (user, reply) as alternating user and assistant chat messages."""
    out: list[dict[str, str]] = []
    for user, reply in pairs:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return out


def parse_messages(messages: Sequence[ChatMessage]) -> Turn:
    """Messages to a :class:`Turn`.

    Leading system (or developer) messages form the system prompt; consecutive messages of
    one role are joined, as the template would show them; the last must be the user's.
    """
    system_parts: list[str] = []
    rest: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if m.role in ("tool", "function") or m.tool_calls:
            raise unsupported("tool messages and tool calls", f"messages.{i}")
        text = m.text(i)
        if m.role in ("system", "developer"):
            if rest:
                raise ApiError(
                    400,
                    "a system message is only supported at the start of the conversation",
                    code="invalid_value",
                    param=f"messages.{i}.role",
                )
            system_parts.append(text)
            continue
        if rest and rest[-1][0] == m.role:
            rest[-1] = (m.role, rest[-1][1] + "\n\n" + text)
        else:
            rest.append((m.role, text))
    if not rest or rest[-1][0] != "user":
        raise ApiError(
            400,
            "the last message must be the user's (sinkchat does not continue a started reply)",
            code="invalid_value",
            param="messages",
        )
    if rest[0][0] != "user":
        rest.insert(0, ("user", ""))  # a greeting by the assistant opens the chat: an empty question before it
    history = tuple((rest[i][1], rest[i + 1][1]) for i in range(0, len(rest) - 1, 2))
    system = "\n\n".join(system_parts) if system_parts else None
    return Turn(system=system or None, history=history, user=rest[-1][1])


def _field(h: hashlib._Hash, text: str | None) -> None:
    data = (text or "").strip().encode("utf-8", "replace")
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def prefix_keys(system: str | None, history: Iterable[Pair]) -> list[str]:
    """Digest of the conversation after 0, 1, 2 ... exchanges."""
    h = hashlib.sha256(b"sinkchat-conversation-1")
    _field(h, system)
    keys = [h.hexdigest()]
    for user, reply in history:
        _field(h, user)
        _field(h, reply)
        keys.append(h.hexdigest())
    return keys


def same_text(a: str, b: str) -> bool:
    return a.strip() == b.strip()


@dataclass
class Entry:
    """What the index knows of one saved conversation."""

    key: str
    """Digest of the whole conversation."""
    before_last: str | None
    """Digest without its last exchange (None when it has none): a regenerate repeats that."""
    last_user: str
    stamp: float


Action = Literal["continue", "regenerate"]


@dataclass(frozen=True)
class Match:
    session_id: str
    action: Action
    extra: tuple[Pair, ...] = ()
    """Exchanges the request brings that the conversation does not hold yet (read before the reply)."""


@dataclass
class ConversationIndex:
    """Saved conversations by digest; refreshed from the store's update stamps, so other processes' changes count."""

    entries: dict[str, Entry] = field(default_factory=dict)
    _by_key: dict[str, set[str]] = field(default_factory=dict)
    _by_before: dict[str, set[str]] = field(default_factory=dict)

    def put(self, session_id: str, system: str | None, exchanges: Sequence[Pair], stamp: float) -> None:
        self.drop(session_id)
        keys = prefix_keys(system, exchanges)
        entry = Entry(keys[-1], keys[-2] if len(keys) > 1 else None, exchanges[-1][0] if exchanges else "", stamp)
        self.entries[session_id] = entry
        self._by_key.setdefault(entry.key, set()).add(session_id)
        if entry.before_last is not None:
            self._by_before.setdefault(entry.before_last, set()).add(session_id)

    def invalidate(self, session_id: str) -> None:
        """This conversation changed: read it again at the next refresh."""
        entry = self.entries.get(session_id)
        if entry is not None:
            entry.stamp = -1.0

    def drop(self, session_id: str) -> None:
        entry = self.entries.pop(session_id, None)
        if entry is None:
            return
        self._by_key.get(entry.key, set()).discard(session_id)
        if entry.before_last is not None:
            self._by_before.get(entry.before_last, set()).discard(session_id)

    def refresh(self, stamps: dict[str, float], load: Callable[[str], tuple[str | None, Sequence[Pair]]]) -> None:
        """Bring the index up to date: ``stamps`` are every session's last change, ``load`` reads one."""
        for sid in [s for s in self.entries if s not in stamps]:
            self.drop(sid)
        for sid, stamp in stamps.items():
            entry = self.entries.get(sid)
            if entry is None or entry.stamp != stamp:
                system, exchanges = load(sid)
                self.put(sid, system, exchanges, stamp)

    def _newest(self, ids: Iterable[str]) -> str | None:
        ids = list(ids)
        return max(ids, key=lambda s: (self.entries[s].stamp, s)) if ids else None

    def find(self, turn: Turn) -> Match | None:
        """The saved conversation this request goes on from, if any.

        In order: one that holds exactly the request's history (continue it); one that
        holds it plus a reply to this same message (regenerate that reply); one that holds
        a shorter part of it (read the rest, then continue).  A first message never
        regenerates: two clients opening with the same words get a conversation each.
        """
        keys = prefix_keys(turn.system, turn.history)
        found = self._newest(self._by_key.get(keys[-1], ()))
        if found is not None:
            return Match(found, "continue")
        if turn.history:
            same = [s for s in self._by_before.get(keys[-1], ()) if same_text(self.entries[s].last_user, turn.user)]
            found = self._newest(same)
            if found is not None:
                return Match(found, "regenerate")
        for k in range(len(keys) - 2, 0, -1):
            found = self._newest(self._by_key.get(keys[k], ()))
            if found is not None:
                return Match(found, "continue", turn.history[k:])
        return None


def common_exchanges(saved: Sequence[Pair], history: Sequence[Pair]) -> int:
    """How many leading exchanges two conversations share."""
    n = 0
    for (u1, a1), (u2, a2) in zip(saved, history, strict=False):
        if not (same_text(u1, u2) and same_text(a1, a2)):
            break
        n += 1
    return n
