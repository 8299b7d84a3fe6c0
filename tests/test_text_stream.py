"""Streaming text out of token pieces: UTF-8 split across tokens, stop strings across tokens, inert output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sinkchat.safe_text import inert
from sinkchat.text_stream import StopMatcher, Utf8Joiner


def test_utf8_character_split_over_pieces_is_emitted_whole() -> None:
    data = "Grüße 🐉".encode()
    joiner = Utf8Joiner()
    out = [joiner.push(data[i : i + 1]) for i in range(len(data))]
    assert "".join(out) + joiner.flush() == "Grüße 🐉"
    assert "\ufffd" not in "".join(out)


@given(st.text(), st.lists(st.integers(1, 7), min_size=1))
def test_utf8_any_split_round_trips(text: str, cuts: list[int]) -> None:
    data, joiner, out, i = text.encode(), Utf8Joiner(), [], 0
    for n in cuts * (len(text.encode()) + 1):
        if i >= len(data):
            break
        out.append(joiner.push(data[i : i + n]))
        i += n
    assert "".join(out) + joiner.flush() == text


def test_stop_string_spanning_pieces_is_cut_and_never_leaked() -> None:
    matcher = StopMatcher(["</answer>"])
    emitted = []
    for piece in ["The answer is 4", "</ans", "wer> and more"]:
        text, stopped = matcher.push(piece)
        emitted.append(text)
        if stopped:
            break
    assert "".join(emitted) == "The answer is 4"
    assert matcher.stopped == "</answer>"


def test_held_back_prefix_is_released_when_it_was_not_a_stop() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.push("go ST") == ("go ", False)
    assert matcher.push("ART") == ("START", False)
    assert matcher.push("ST") == ("", False)
    assert matcher.flush() == "ST"


@given(st.text(alphabet="abS", max_size=40), st.lists(st.integers(1, 5), min_size=1, max_size=40))
def test_stop_matcher_equals_cutting_the_whole_text(text: str, cuts: list[int]) -> None:
    stop = "Sab"
    matcher, out, i = StopMatcher([stop]), [], 0
    while i < len(text):
        n = cuts[len(out) % len(cuts)]
        emitted, stopped = matcher.push(text[i : i + n])
        out.append(emitted)
        i += n
        if stopped:
            break
    if not matcher.stopped:
        out.append(matcher.flush())
    expected = text[: text.find(stop)] if stop in text else text
    assert "".join(out) == expected


def test_inert_shows_escape_sequences_instead_of_running_them() -> None:
    hostile = "ok\x1b[2J\x1b]8;;file:///etc/passwd\x07link\x9b31m\r\nnext\rover\ttab"
    shown = inert(hostile)
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown and "\r" not in shown
    assert shown == "ok␛[2J␛]8;;file:///etc/passwd␇link\\x9b31m\nnext␍over\ttab"


def test_inert_leaves_markup_like_text_as_text() -> None:
    assert inert("[bold red]x[/] [link=file:///etc/passwd]") == "[bold red]x[/] [link=file:///etc/passwd]"
