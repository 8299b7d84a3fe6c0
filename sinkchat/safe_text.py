"""Model output is untrusted: make control characters visible instead of letting a terminal act on them."""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and the C1 block (0x80-0x9f, e.g. CSI 0x9b).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")
# Bidirectional controls: they reorder what follows them ("Trojan Source"), so they are shown, not obeyed.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
LINE_LIMIT = 200
"""Characters of one field (a title, a path) shown on one line before it is cut."""


def _picture(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return chr(0x2400 + code)  # Unicode "control pictures": \x1b becomes ␛
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"\\x{code:02x}"


def inert(text: str) -> str:
    """Text safe to write to a terminal: escape sequences are shown, not executed.

    A carriage return alone would let output overwrite what is on screen, so it is
    shown too; "\\r\\n" line ends become plain newlines.
    """
    text = _CONTROL.sub(_picture, text.replace("\r\n", "\n"))
    return _BIDI.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def inert_line(text: str, limit: int = LINE_LIMIT) -> str:
    """:func:`inert`, on one line and at most ``limit`` characters: for titles, paths and names in a listing."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return inert(line)
