"""Line-mode chat (``sinkchat run --plain``): for ssh, pipes and screen readers.

On a terminal it prompts and takes slash commands; from a pipe each input line is one
message and only the replies are written to stdout.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import TextIO

from sinkchat.safe_text import inert, inert_line
from sinkchat.session import Session

HELP = """\
Type a message and press Enter.  End a line with \\ to continue the message on the next line.
Ctrl-C stops a reply (or clears the line); Ctrl-D (or /quit) leaves.
  /stats          cache fill, pinned tokens, shifts, evicted tokens, speed, memory
  /reset [TEXT]   start a new chat (with TEXT as the system prompt); this one stays saved
  /session        this session's id and title (resume it with: sinkchat run --resume ID)
  /help           this help
  /quit           leave"""


def _read_message(stdin: TextIO, interactive: bool) -> str | None:
    """One message: a line, or several joined with a trailing backslash.  None at end of input.

    On a terminal ``input()`` is used, so readline gives line editing and history.
    """
    lines: list[str] = []
    while True:
        if interactive:
            try:
                line = input("you> " if not lines else "...> ")
            except EOFError:
                return "\n".join(lines) if lines else None
        else:
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
    chat: Session,
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
    continuing = chat.chat_problem is not None
    if continuing:  # one line, whatever the mode: this model continues text, it does not chat
        stderr.write(f"sinkchat: {inert(chat.chat_problem)} Continuing text instead (not saved).\n")
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        stderr.write(f"{chat.model_name} · n_ctx {chat.n_ctx} · {chat.chat.sinks.sink_tokens} sink tokens · /help\n")
        for note in chat.notes:
            stderr.write(f"note: {inert(note)}\n")
        _show_resumed(chat, stderr)
    elif chat.note:
        stderr.write(f"sinkchat: {inert(chat.note)}\n")
    shown_error: str | None = None
    while True:
        try:
            text = _read_message(stdin, interactive)
        except KeyboardInterrupt:  # at the prompt: drop the line, as a shell does
            stderr.write("\n")
            continue
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
                stderr.write("new chat (not saved)\n" if chat.unsaved else f"new chat: session {chat.id[:8]}\n")
            elif name == "/session":
                unsaved = " (not saved)" if chat.unsaved else ""
                stderr.write(f"session {chat.id[:8]} · {inert_line(chat.title or '(untitled)')}{unsaved}\n")
            elif name == "/help":
                stderr.write(HELP + "\n")
            else:
                stderr.write(f"unknown command {name}; /help lists them\n")
            continue
        if interactive:
            stdout.write("...  " if continuing else "bot> ")
        stream = chat.generate(text, max_tokens=max_tokens) if continuing else chat.send(text, max_tokens=max_tokens)
        with _ctrl_c_cancels(chat), closing(stream):  # a reader gone mid-reply still leaves the turn closed
            for piece in stream:
                stdout.write(inert(piece))
                stdout.flush()
        if chat.last_reply is not None and chat.last_reply.finish_reason == "cancelled":
            stderr.write(" [stopped]")
        if chat.save_error and chat.save_error != shown_error:  # once, not after every reply
            stderr.write(f"\nsinkchat: {inert(chat.save_error)}")
            shown_error = chat.save_error
        stdout.write("\n")
        stdout.flush()


def _show_resumed(session: Session, out: TextIO, last: int = 2) -> None:
    """On resume: which session, what happened to its cache, and its last messages."""
    history = [m for m in session.messages if m["role"] != "system"]
    if not history:
        if session.note:  # e.g. a new chat that cannot be saved
            out.write(f"note: {inert(session.note)}\n")
        return
    out.write(f"resumed session {session.id[:8]} · {inert_line(session.title)} · {len(history)} messages\n")
    if session.note:
        out.write(f"note: {inert(session.note)}\n")
    if len(history) > last:
        out.write(f"[{len(history) - last} earlier messages]\n")
    for m in history[-last:]:
        who = "you> " if m["role"] == "user" else "bot> "
        out.write(who + inert(m["content"]) + "\n")


@contextmanager
def _ctrl_c_cancels(chat: Session) -> Iterator[None]:
    """While a reply streams, Ctrl-C asks the chat to stop instead of raising mid-step.

    A KeyboardInterrupt can land between llama.cpp calls; a cancel is checked between
    tokens, where the reply ends cleanly and the turn is closed.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda _sig, _frame: chat.cancel())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
