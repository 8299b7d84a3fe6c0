"""Messages as the chat and its sessions hold them."""

from __future__ import annotations

Message = dict[str, str]


def alternates(roles: list[str]) -> bool:
    """True for user, assistant, user, assistant ... (whole exchanges, as saved sessions hold them)."""
    return len(roles) % 2 == 0 and all(r == ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(roles))
