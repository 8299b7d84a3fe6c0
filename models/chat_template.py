"""The model's own chat template (Jinja, from GGUF metadata), rendered in a sandbox.

A GGUF file is downloaded from strangers: its template runs in Jinja's immutable sandbox,
which refuses attribute tricks that could reach Python internals.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from functools import cached_property

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from models.errors import ModelError

# ChatML, the most common format for small chat models (tests and benches use it as a plain example).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ModelError):
    """The chat template could not be compiled or rendered."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"the model's chat template refused the chat: {message}")


class ChatTemplate:
    """Renders a message list the way the model was trained to read it."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "", name: str = "template") -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.name = name
        """Where it came from, for messages: ``the GGUF's``, a shipped name, a file name."""
        self._now = datetime.datetime.now()
        """Rendering time, fixed per template: a date it prints (Llama 3.2) must not change under a pinned prompt."""

    @cached_property
    def _template(self) -> jinja2.Template:
        env = ImmutableSandboxedEnvironment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=_raise_exception, strftime_now=self._now.strftime)
        try:
            return env.from_string(self.source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template does not compile: {exc}") from exc

    def render(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        try:
            return self._template.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template failed: {exc}") from exc
