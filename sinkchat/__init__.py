"""sinkchat: chat forever with a local GGUF model in fixed memory, keeping the attention sinks.

``from sinkchat import Chat`` is the Python API; the import is lazy so that the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Chat", "ChatStats", "SinkSettings", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from sinkchat.chat import Chat
    from sinkchat.config import SinkSettings
    from sinkchat.stats import ChatStats


def __getattr__(name: str) -> Any:
    if name == "Chat":
        from sinkchat.chat import Chat

        return Chat
    if name == "ChatStats":
        from sinkchat.stats import ChatStats

        return ChatStats
    if name == "SinkSettings":
        from sinkchat.config import SinkSettings

        return SinkSettings
    raise AttributeError(f"module 'sinkchat' has no attribute {name!r}")
