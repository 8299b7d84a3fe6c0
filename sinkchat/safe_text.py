"""Model output is untrusted: make control characters visible instead of letting a terminal act on them."""

from __future__ import annotations

import re

# C0 controls except tab and newline, DEL, and the C1 block (0x80-0x9f, e.g. CSI 0x9b).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


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
    return _CONTROL.sub(_picture, text.replace("\r\n", "\n"))


def inert_line(text: str) -> str:
    """:func:`inert`, on one line: for titles in a listing."""
    return inert(" ".join(text.split()))
