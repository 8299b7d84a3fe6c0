"""Chat-template conformance: the cache always holds the template's own rendering of the chat.

For every shipped template (``models/templates``: Llama 3.x, Qwen 2.5/3, Gemma 2/3,
Mistral v3/Nemo/Small, Phi-3.5/4, a DeepSeek-R1 distill, Granite 3, SmolLM2, ChatML),
random chats run through the real ``Chat``, ``SinkEngine`` and ``SinkPolicy`` on a
character-level fake model whose KV cache obeys llama.cpp's position semantics.  At the
start of every reply, the cache's text must equal the template's own full rendering of
[system prompt + the exchanges still cached + the new message], with the generation prompt.
Where sinkchat places the system prompt itself (templates that put it in the last user
message, refuse it or drop it), the reference is the documented equivalent of
:meth:`ChatFormat.reference`: the system prompt folded into the oldest cached
user message.  The slow tests run the same property on the real SmolLM2 weights through
``chat_template=``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sinkchat.chat as chat_module
from models.chat_template import ChatTemplate
from models.templates import catalog, resolve, template_text
from sinkchat.chat import Chat
from sinkchat.chat_format import ChatFormat, ChatFormatError, markup_prefix
from sinkchat.config import SinkSettings
from sinkchat.errors import NoChatTemplateError
from tests.fake_model import FakeContext, FakeModel, ScriptedSampler

TEMPLATES = sorted(catalog())
PLACEMENT = {"gemma-3": "first_user", "gemma-2": "refused", "mistral-v3": "last_user", "mistral-nemo": "last_user"}
REASONING = {"qwen-3", "deepseek-r1-distill"}


@pytest.fixture(autouse=True)
def scripted_replies(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Replies come from the fake context's script, except in the tests on real weights."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setattr(chat_module, "Sampler", ScriptedSampler)


def fake_chat(name: str, *, window: int, system: str | None, keep: bool = True) -> tuple[Chat, FakeContext]:
    """A chat on the fake model whose cache leaves ``window`` tokens beside the opening."""
    model = FakeModel(template_text(name), name=name)
    fmt = ChatFormat(model.chat_template().render)
    opening = len(fmt.opening(system, pin_system=keep).text) + len(fmt.user_open)
    n_ctx = opening + window
    ctx = FakeContext(n_ctx)
    chat = Chat(model, ctx, sinks=SinkSettings(keep_system_prompt=keep), system_prompt=system)  # type: ignore[arg-type]
    return chat, ctx


class Conformance:
    """Drives a chat and checks the cache against the template at the start of every reply."""

    def __init__(self, chat: Chat, ctx: FakeContext, system: str | None, *, keep: bool = True) -> None:
        self.chat, self.ctx, self.system, self.keep = chat, ctx, system, keep
        self.exchanges: list[tuple[str, str]] = []
        self.checked = 0
        self.pending_user = ""

    def cache_text(self) -> str:
        assert [t for _, t in self.ctx.cells] == self.chat.engine.tokens, "the KV cache and the mirror disagree"
        assert self.ctx.positions() == list(range(len(self.ctx.cells))), "positions are not contiguous"
        return self.chat.model.detokenize(self.ctx.contents(), special=True)

    def cached_groups(self) -> list[int] | None:
        """The exchanges (1-based) still in the cache, oldest first; None when a turn was cut inside."""
        layout = self.chat.engine.layout
        if any(seg.cut for seg in layout.segments):
            return None
        current = self.chat._group
        groups = [g for g, _ in layout.group_sizes() if g != current]
        assert groups == list(range(current - len(groups), current)), f"not the newest whole exchanges: {groups}"
        return groups

    def check(self) -> None:
        groups = self.cached_groups()
        text = self.cache_text()
        assert self.chat.engine.n_cached <= self.chat.n_ctx
        if groups is None:
            return
        fmt = self.chat.format
        assert fmt is not None
        system = self.system
        oldest = groups[0] if groups else self.chat._group
        if not self.keep and fmt.folds_system and oldest > 1:
            system = None  # not pinned: it left with the first exchange
        expected = fmt.reference(system, [self.exchanges[g - 1] for g in groups], self.pending_user)
        assert text == expected, _diff(text, expected)
        if self.system and (self.keep or system):
            assert self.system.strip() in text, "the system prompt left the cache"
        self.checked += 1

    def send(self, user: str, reply: str) -> None:
        self.ctx.say(reply)
        self.pending_user = user
        self.ctx.on_reply_start[:] = [self.check]
        got = "".join(self.chat.send(user))
        assert got == reply
        self.exchanges.append((user, reply))

    def regenerate(self, reply: str) -> None:
        self.ctx.say(reply)
        self.pending_user, old = self.exchanges[-1][0], self.exchanges.pop()
        self.ctx.on_reply_start[:] = [self.check]
        assert "".join(self.chat.regenerate()) == reply
        self.exchanges.append((old[0], reply))


def conforming(name: str, *, window: int, system: str | None, keep: bool = True) -> Conformance:
    """A fresh chat on the fake model with ``name``'s template, checked at every reply."""
    chat, ctx = fake_chat(name, window=window, system=system, keep=keep)
    return Conformance(chat, ctx, system, keep=keep)


def _diff(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return f"cache and template differ at {n} of {len(a)}/{len(b)}: cache {a[n : n + 60]!r}, template {b[n : n + 60]!r}"


# -- the templates themselves ----------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_shipped_template_is_learned_and_reproduced_exactly(name: str) -> None:
    fmt = ChatFormat(FakeModel(template_text(name)).chat_template().render)
    fmt.check()
    assert fmt.placement == PLACEMENT.get(name, "native")
    assert (fmt.placement != "native") == bool(fmt.notes) or fmt.placement == "first_user"


def test_the_catalog_names_a_source_for_every_template() -> None:
    shipped = {p.stem for p in (Path(chat_module.__file__).parents[1] / "models" / "templates").glob("*.jinja")}
    assert shipped == set(TEMPLATES), "every template file has a catalog entry and the reverse"
    assert len(shipped) >= 12
    for info in catalog().values():
        assert info.source and info.models


def test_templates_resolve_by_name_alias_and_file(tmp_path: Path) -> None:
    assert resolve("LLAMA-3.1")[0] == "llama-3.3"
    own = tmp_path / "mine.jinja"
    own.write_text(template_text("chatml"))
    assert resolve(str(own)) == ("mine.jinja", template_text("chatml"))
    from models.errors import ModelFileError

    with pytest.raises(ModelFileError, match="no chat template named"):
        resolve("no-such-template")


# -- what the learned pieces are, on known templates -----------------------------------


def test_markup_prefix_does_not_end_inside_a_marker() -> None:
    assert markup_prefix("<|end|>\n<|endoftext|>", "<|end|>\n<|user|>\n") == "<|end|>\n"
    assert markup_prefix("<|im_end|>\n", "<|im_end|>\n<|im_start|>user\n") == "<|im_end|>\n"
    assert markup_prefix("[/INST]", "[/INST] ") == "[/INST]"


def pieces(name: str) -> ChatFormat:
    return ChatFormat(FakeModel(template_text(name)).chat_template().render)


def test_phi_end_of_text_is_never_cached_between_turns() -> None:
    fmt = pieces("phi-3.5")
    assert fmt.end == "</s>" and fmt.reply_close == "<|end|>\n"


def test_reasoning_is_stripped_from_earlier_replies() -> None:
    fmt = pieces("qwen-3")
    assert fmt.reply("<think>\nhmm\n</think>\n\nFour.").content == "Four."
    r1 = pieces("deepseek-r1-distill")
    assert r1.generation.endswith("<think>\n") and r1.reply_open == "<｜Assistant｜>"
    assert r1.reply("hmm\n</think>\n\nFour.").content == "\n\nFour."


def test_gemma_folds_the_system_prompt_into_the_pinned_first_turn() -> None:
    fmt = pieces("gemma-3")
    opening = fmt.opening("Be brief.")
    assert opening.folds and opening.text == "<s><start_of_turn>user\nBe brief.\n\n"
    assert fmt.user("  hi  ", open=False).text == "hi<end_of_turn>\n"


def test_a_system_prompt_that_reads_like_markup_stays_literal() -> None:
    fmt = pieces("chatml")
    spans = fmt.opening("system").spans
    assert ("system", True) in spans and spans[0] == ("<|im_start|>system\n", False)


def test_broken_templates_are_refused_with_the_reason() -> None:
    with pytest.raises(ChatFormatError, match="cannot render a plain chat"):
        ChatFormat(ChatTemplate("{{ raise_exception('no') }}").render)
    repeats = "{% for m in messages %}{{ m['content'] }}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ChatFormatError, match="repeats"):
        ChatFormat(ChatTemplate(repeats).render)
    numbered = "{% for m in messages %}<{{ loop.index }}>{{ m['content'] }}{% endfor %}"
    with pytest.raises(ChatFormatError, match="changes from one exchange"):
        ChatFormat(ChatTemplate(numbered).render)


def test_a_chat_with_an_unusable_template_refuses_to_send_and_says_why() -> None:
    model = FakeModel("{% for m in messages %}<{{ loop.index }}>{{ m['content'] }}{% endfor %}")
    chat = Chat(model, FakeContext(256))  # type: ignore[arg-type]
    assert chat.format is None and "cannot be used" in (chat.chat_problem or "")
    with pytest.raises(NoChatTemplateError, match="--chat-template"):
        "".join(chat.send("hi"))
    assert "".join(chat.generate("Once", max_tokens=0)) == ""  # text continuation still works


def test_a_base_model_without_a_template_is_not_chatted_with_in_a_made_up_format() -> None:
    chat = Chat(FakeModel(None), FakeContext(256))  # type: ignore[arg-type]
    assert chat.template is None and "base model" in (chat.chat_problem or "")
    with pytest.raises(NoChatTemplateError, match="base model"):
        "".join(chat.send("hi"))


# -- conformance over random chats ------------------------------------------------------

_TEXT = st.lists(
    st.sampled_from([*"abcdefgh XYZ.,?!\n\t ", "<|im_end|>", "[INST]", "<think>", "é", "日本"]), min_size=1, max_size=24
).map("".join)
_REPLY = st.tuples(st.booleans(), _TEXT, _TEXT).map(
    lambda r: f"<think>\n{r[1]}\n</think>\n\n{r[2]}" if r[0] else r[1] + r[2]
)


@pytest.mark.parametrize("name", TEMPLATES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    system=st.one_of(st.none(), st.sampled_from(["You are terse.", "  Answer in French.\n", "system"])),
    window=st.integers(min_value=420, max_value=700),
    turns=st.lists(st.tuples(_TEXT, _REPLY), min_size=3, max_size=18),
    regenerate_at=st.sets(st.integers(min_value=1, max_value=17), max_size=3),
)
def test_the_cache_is_the_templates_rendering_at_every_reply(
    name: str, system: str | None, window: int, turns: list[tuple[str, str]], regenerate_at: set[int]
) -> None:
    run = conforming(name, window=window, system=system)
    for i, (user, reply) in enumerate(turns):
        run.send(user, reply)
        if i in regenerate_at:
            run.regenerate(reply[::-1] or "again")
    assert run.checked >= len(turns)


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_system_prompt_survives_fifty_shifts(name: str) -> None:
    system = "You are a pirate. Always say arr."
    run = conforming(name, window=420, system=system)
    chat = run.chat
    for i in range(90):
        run.send(
            f"Question {i}: what is {i} + {i}?", f"<think>\nadd\n</think>\n\nArr, {2 * i}." if i % 3 else f"{2 * i}"
        )
        if chat.stats.shifts >= 50:
            break
    assert chat.stats.shifts >= 50 and run.checked >= 50
    assert chat.stats.fallbacks == 0
    assert system in run.cache_text()


@pytest.mark.parametrize("name", ["chatml", "llama-3.2", "qwen-3"])
def test_a_reply_cut_by_a_stop_string_is_cached_as_its_saved_text(name: str) -> None:
    """The tokens past the stop string are read no further: the next prompt is the template's again."""
    run = conforming(name, window=500, system="Be brief.")
    run.ctx.say("Hello there STOP and more")
    assert "".join(run.chat.send("hi", stop=["STOP"])) == "Hello there "
    run.exchanges.append(("hi", "Hello there "))
    run.send("next", "fine")
    assert run.checked == 1


def unpinned(name: str, system: str, turns: int, *, conforms: bool = True) -> Conformance:
    """A chat whose system prompt is not pinned (``--no-keep-system-prompt``), after ``turns`` exchanges."""
    run = conforming(name, window=420, system=system, keep=False)
    if not conforms:  # no template rendering holds here, by request: only count the turns
        run.check = lambda: None  # type: ignore[method-assign]
    for i in range(turns):
        run.send(f"Question number {i} is here?", f"Answer number {i} is this.")
    assert run.chat.stats.shifts > 0
    return run


@pytest.mark.parametrize("name", ["gemma-3", "gemma-2", "mistral-v3"])
def test_an_unpinned_folded_system_prompt_leaves_with_the_first_exchange(name: str) -> None:
    run = unpinned(name, "You are a pirate.", 12)
    assert "You are a pirate." not in run.cache_text() and run.checked == 12  # and it still reads as the template's


def test_an_unpinned_system_block_is_evicted_like_an_old_turn_keeping_the_sinks() -> None:
    text = unpinned("chatml", "You are a pirate.", 12, conforms=False).cache_text()
    assert "You are a pirate." not in text
    # Only the sinks stay (4 one-character tokens here), then whole exchanges: what --no-keep-system-prompt asks for.
    assert text.startswith("<|im" + "<|im_start|>user\n")


@pytest.mark.parametrize("name", TEMPLATES)
def test_rebuild_and_restore_read_history_in_the_templates_form(name: str) -> None:
    system = "Be helpful."
    run = conforming(name, window=500, system=system)
    chat = run.chat
    for i in range(6):
        run.send(f"q{i} " * 4, f"<think>\nr{i}\n</think>\n\na{i} " * 3)
    state, kv = chat.capture()
    kept = chat.rebuild(system_prompt="Be terse.")
    assert kept >= 1
    run.system = "Be terse."
    run.send("after the rebuild", "fine")
    assert run.checked == 7

    # A snapshot behind the messages: the restored cache reads the missing exchanges in the template's form.
    resumed = conforming(name, window=500, system=system)
    history = [m for m in chat.messages if m["role"] != "system"]
    assert resumed.chat.restore(state, kv, history, system) > 0
    resumed.exchanges = list(run.exchanges)
    resumed.send("after the restore", "yes")
    assert resumed.checked == 1


# -- on the real SmolLM2 weights, through chat_template= ---------------------------------

PROMPTS = [
    "Hi! Who are you?",
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Count from one to five.",
    "What did I ask first?",
    "Thanks, bye.",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", TEMPLATES)
def test_each_template_chats_through_shifts_on_smollm2_weights(name: str, smollm2_path: Path) -> None:
    """The same property end to end on real weights and a real tokenizer: markup, literal text, KV shifts."""
    system = "You are brief."
    sampling = {"temperature": 0.0, "repeat_penalty": 1.3}
    with Chat.load(smollm2_path, n_ctx=192, chat_template=name, system_prompt=system, sampling=sampling) as chat:
        fmt = chat.format
        assert fmt is not None and chat.template is not None and chat.template.name == name
        for prompt in PROMPTS:
            "".join(chat.send(prompt, max_tokens=32))
            assert chat.context.pos_max() == chat.engine.n_cached - 1 <= chat.n_ctx - 1
            layout = chat.engine.layout
            assert not any(seg.cut for seg in layout.segments)
            groups = [g for g, _ in layout.group_sizes()]
            history = [m["content"] for m in chat.messages if m["role"] != "system"]
            pairs = list(zip(history[::2], history[1::2], strict=True))
            text = chat.model.detokenize(chat.engine.tokens, special=True)
            turn = fmt.user("X")
            assert fmt.reference(system, [pairs[g - 1] for g in groups], "X") == text + turn.text + turn.generation
            assert system in text
        assert chat.stats.shifts >= 2 and chat.stats.fallbacks == 0
