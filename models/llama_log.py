"""Route llama.cpp's log into Python logging instead of the terminal.

llama.cpp writes its log to stderr, which would tear through a TUI.  Its warnings and
errors also explain why a model failed to load, so the recent ones are kept for error
messages.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections import deque

log = logging.getLogger("llama.cpp")
log.addHandler(logging.NullHandler())  # silent unless the application configures logging

# ggml_log_level (ggml.h): NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the previous line)
_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}

_recent: deque[str] = deque(maxlen=32)
_partial: list[str] = []
_lock = threading.Lock()
_state = {"level": logging.INFO, "installed": False}
_callback: object = None  # keeps the ctypes trampoline alive


def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    py_level = _state["level"] if level == 5 else _LEVELS.get(level, logging.INFO)
    _state["level"] = py_level
    if py_level < logging.WARNING and not log.isEnabledFor(py_level):
        return
    # llama.cpp sends a line in pieces; emit whole lines only.
    _partial.append(text.decode("utf-8", errors="replace"))
    if not _partial[-1].endswith("\n"):
        return
    message = "".join(_partial).strip()
    _partial.clear()
    if not message:
        return
    if py_level >= logging.WARNING:
        with _lock:
            _recent.append(message)
    log.log(py_level, "%s", message)


def install() -> None:
    """Take over llama.cpp's log callback (idempotent)."""
    global _callback
    if _state["installed"]:
        return
    import llama_cpp

    _callback = llama_cpp.llama_log_callback(_on_log)
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    _state["installed"] = True


def recent_problems(limit: int = 6) -> list[str]:
    """The latest warnings and errors llama.cpp reported, oldest first."""
    with _lock:
        return list(_recent)[-limit:]


def clear() -> None:
    with _lock:
        _recent.clear()


def explain(problems: list[str]) -> str:
    """The most telling of llama.cpp's recent complaints, to end an error message on the same line.

    An error is one line (the CLI prints ``sinkchat: error: ...``), so llama.cpp's text is
    joined with a space and its own line breaks and column padding are folded.
    """
    if not problems:
        return ""
    telling = [p for p in problems if "error" in p.lower()] or problems
    return f" llama.cpp said: {' '.join(telling[-1].split())}"
