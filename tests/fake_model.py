"""A character-level stand-in for a llama.cpp model and context, to drive the real ``Chat`` without weights.

Every character is one token (its code point), so the cache's text is exactly what was
fed: the conformance tests compare it with the template's own rendering character by
character.  The context is :class:`tests.fakes.FakeKV`, which obeys llama.cpp's position
semantics; replies come from a script instead of sampling.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from models.chat_template import ChatTemplate
from models.options import LoadOptions
from tests.fakes import FakeKV

BOS = 0xE0000
EOG = 0xE0001
_SPECIAL = {BOS: "<s>", EOG: "</s>"}


class FakeModel:
    """Tokens are characters; BOS and end-of-turn are two private code points."""

    def __init__(self, template: str | None, *, add_bos: bool = False, name: str = "fake") -> None:
        self._template = template
        self.name = name
        self.path = Path(f"{name}.gguf")
        self.bos, self.eos = BOS, EOG
        self.add_bos = add_bos
        self.n_vocab = 0x110000
        self.n_layer = 1
        self.n_gpu_layers = 0
        self.n_ctx_train = 0

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return ([BOS] if add_special and self.add_bos else []) + [ord(c) for c in text]

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        if token in _SPECIAL:
            return _SPECIAL[token].encode() if special else b""
        return chr(token).encode("utf-8")

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return b"".join(self.token_to_piece(t, special=special) for t in tokens).decode("utf-8")

    def token_text(self, token: int) -> str:
        return self.token_to_piece(token, special=True).decode("utf-8")

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def chat_template(self, *, source: str | None = None, name: str | None = None) -> ChatTemplate | None:
        source = source if source is not None else self._template
        if source is None:
            return None
        return ChatTemplate(source, bos_token="<s>", eos_token="</s>", name=name or "fake")

    def close(self) -> None:
        pass


class FakeContext(FakeKV):
    """A :class:`FakeKV` with the context attributes ``Chat`` reads, and the script of the next reply."""

    def __init__(self, n_ctx: int, *, n_batch: int = 64, can_shift: bool = True) -> None:
        super().__init__(n_ctx, n_batch=n_batch, can_shift=can_shift)
        self.options = LoadOptions(n_ctx=n_ctx, n_batch=n_batch)
        self.script: list[int] = []
        self.on_reply_start: list = []
        """Callables run at the first sample of each reply (the cache then holds the whole prompt)."""

    def save_state(self) -> bytes:
        return json.dumps(self.cells).encode()

    def load_state(self, data: bytes) -> None:
        self.cells = [(p, t) for p, t in json.loads(data)]

    def say(self, text: str) -> None:
        """The next reply: ``text`` and the end of turn."""
        self.script = [ord(c) for c in text] + [EOG]

    def close(self) -> None:
        pass


class ScriptedSampler:
    """Replaces ``models.sampler.Sampler``: plays the context's script."""

    def __init__(self, settings: object, n_vocab: int) -> None:
        self._started = False

    def sample(self, context: FakeContext) -> int:
        if not self._started:
            self._started = True
            for check in context.on_reply_start:
                check()
        return context.script.pop(0) if context.script else EOG

    def close(self) -> None:
        pass
