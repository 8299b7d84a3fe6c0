"""Line-mode chat (``sinkchat run --plain``): for ssh, pipes and screen readers.

On a terminal it prompts and takes slash commands; from a pipe each input line is one
message and only the replies are written to stdout.
"""

from __future__ import annotations

import sys
from typing import TextIO

from sinkchat.chat import Chat
from sinkchat.safe_text import inert

HELP = """\
Type a message and press Enter.  End a line with \\ to continue the message on the next line.
Ctrl-C stops a reply; Ctrl-D (or /quit) leaves.
  /stats          cache fill, pinned tokens, shifts, evicted tokens, speed, memory
  /reset [TEXT]   start a new chat (with TEXT as the system prompt)
  /help           this help
  /quit           leave"""


def _read_message(stdin: TextIO, out: TextIO, interactive: bool) -> str | None:
    """One message: a line, or several joined with a trailing backslash.  None at end of input."""
    lines: list[str] = []
    while True:
        if interactive:
            out.write("you> " if not lines else "...> ")
            out.flush()
        line = stdin.readline()
        if not line:
            return "\n".join(lines) if lines else None
        line = line.rstrip("\n")
        if interactive and line.endswith("\\"):
            lines.append(line[:-1])
            continue
        lines.append(line)
        return "\n".join(lines)


def run_plain(
    chat: Chat,
    *,
    max_tokens: int | None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Chat line by line until end of input; returns the exit status."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    interactive = stdin.isatty()
    if interactive:
        stderr.write(f"{chat.model.name} · n_ctx {chat.n_ctx} · {chat.sinks.sink_tokens} sink tokens · /help\n")
    while True:
        try:
            text = _read_message(stdin, stderr, interactive)
        except KeyboardInterrupt:
            stderr.write("\n")
            return 0
        if text is None:
            if interactive:
                stderr.write("\n")
            return 0
        command = text.strip()
        if not command:
            continue
        if interactive and command.startswith("/"):
            name, _, arg = command.partition(" ")
            if name in ("/quit", "/exit"):
                return 0
            if name == "/stats":
                stderr.write(chat.stats.summary() + "\n")
            elif name == "/reset":
                chat.reset(arg.strip() or None)
                stderr.write("new chat\n")
            elif name == "/help":
                stderr.write(HELP + "\n")
            else:
                stderr.write(f"unknown command {name}; /help lists them\n")
            continue
        if interactive:
            stdout.write("bot> ")
        replies = chat.send(text, max_tokens=max_tokens)
        try:
            for piece in replies:
                stdout.write(inert(piece))
                stdout.flush()
        except KeyboardInterrupt:
            replies.close()  # the reply so far is kept and the turn closed
            stderr.write("\n[stopped]")
        stdout.write("\n")
        stdout.flush()
