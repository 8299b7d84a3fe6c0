"""Every key binding, with the id a user remaps it by (``[keys]`` in the settings file).

Keys the TextArea composer already uses (Ctrl+Y redo, Ctrl+C copy, Ctrl+K ...) are
avoided.  Bindings hidden from the footer are listed by F1 and the command palette.

``check_keymap`` validates a ``[keys]`` table before the app starts: every binding id must
exist, every key must be one Textual can report, and no key may do two things on one
screen.  ``SCOPES`` says which bindings are active together, Textual's own included.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache

from textual.binding import Binding
from textual.keys import KEY_ALIASES, REPLACED_KEYS, Keys, _character_to_key, key_to_character

APP = [
    Binding("f1", "help", "Help", id="app.help"),
    Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
]
CHAT = [
    Binding("escape", "stop", "Stop reply", id="chat.stop"),
    Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
    Binding("f4", "copy", "Copy reply", id="chat.copy", show=False),
    Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
    Binding("f10", "incognito_chat", "Incognito chat", id="chat.incognito", show=False),
    Binding("f2", "system_prompt", "System prompt", id="chat.system", show=False),
    Binding("f3", "sampling", "Sampling", id="chat.sampling", show=False),
    Binding("ctrl+o", "pick_model", "Model", id="chat.model"),
    Binding("ctrl+s,f5", "sessions", "Sessions", id="chat.sessions"),
    Binding("ctrl+g,f9", "app.open_hub", "Get models", id="chat.hub"),
]
COMPOSER = [
    Binding("enter", "send", "Send", id="composer.send", priority=True, show=False),
    # Shift+Enter and Alt+Enter reach the app only from terminals that speak the kitty keyboard
    # protocol; elsewhere they arrive as a plain Enter (Alt+Enter is ESC CR), which sends.
    Binding("ctrl+j,shift+enter,alt+enter", "newline", "New line", id="composer.newline", priority=True, show=False),
]
DIALOG = [Binding("escape", "dismiss(None)", "Close dialog", id="dialog.close")]
SAVE = [Binding("ctrl+s", "save", "Save system prompt", id="dialog.save")]
SESSIONS = [
    Binding("down", "cursor(1)", "Next session", show=False),
    Binding("up", "cursor(-1)", "Previous session", show=False),
    Binding("ctrl+n", "new", "New chat", id="sessions.new"),
    Binding("f2", "rename", "Rename", id="sessions.rename"),
    Binding("delete,f8", "delete", "Delete", id="sessions.delete"),
]
HUB = [Binding("ctrl+b", "cancel_download", "Cancel download", id="hub.cancel")]
CONFIRM = [
    Binding("y", "answer(True)", "Yes", show=False),
    Binding("n", "answer(False)", "No", show=False),
]
HELP = [Binding("escape,f1,q", "dismiss", "Close help", id="help.close")]
WELCOME = [
    Binding("enter", "chat_embedded", "Embedded model", id="welcome.embedded"),
    Binding("ctrl+o", "app.pick_model", "Local models", id="welcome.pick"),
    Binding("ctrl+g,f9", "app.open_hub", "Hub", id="welcome.hub"),
    Binding("ctrl+q", "app.quit", "Quit", id="welcome.quit"),
]
ALL = [*APP, *CHAT, *COMPOSER, *DIALOG, *SAVE, *SESSIONS, *HUB, *CONFIRM, *HELP, *WELCOME]
IDS = {b.id for b in ALL if b.id}


def needs_keyboard_protocol(key: str) -> bool:
    """Enter with a modifier: told apart only by terminals with the kitty keyboard protocol."""
    *modifiers, base = key.split("+")
    return base == "enter" and bool(modifiers)


def effective_keys(keymap: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(id, keys, description)`` for every binding, with the user's remapping applied."""
    return [(b.id or "", keymap.get(b.id or "", b.key), b.description) for b in ALL]


_SHOWN = {"escape": "Esc", "pageup": "PgUp", "pagedown": "PgDn", "up": "↑", "down": "↓", "left": "←", "right": "→"}


def display_key(key: str) -> str:
    """How a person reads a key name: ``ctrl+g`` is ``Ctrl+G``, ``question_mark`` is ``?``."""
    *modifiers, base = _name(key.strip()).split("+")
    if base in _SHOWN:
        shown = _SHOWN[base]
    elif len(base) == 1:
        shown = base.upper() if modifiers else base  # a bare letter is typed as is: y, not Y (Shift+Y)
    elif (character := _character(base)) is not None and base != "space":
        shown = character
    else:
        shown = base.capitalize()
    return "+".join([*(m.capitalize() for m in modifiers), shown])


def display_keys(key_list: str) -> str:
    """Every key of a binding, ``Ctrl+S / F5``."""
    return " / ".join(display_key(k) for k in key_list.split(","))


def first_key(binding_id: str, keymap: dict[str, str]) -> str:
    """The key to name for a binding in a sentence: its first one, as the user has mapped it."""
    binding = next(b for b in ALL if b.id == binding_id)
    return display_key(keymap.get(binding_id, binding.key).split(",")[0])


# -- validation -------------------------------------------------------------------------------

MODIFIERS = ("alt", "ctrl", "hyper", "meta", "shift", "super")
"""In the order Textual writes them in a key name (sorted)."""

_NAMED = {
    value.rsplit("+", 1)[-1]
    for value in (k.value for k in Keys)
    if not value.startswith("<") and "-" not in value and len(value.rsplit("+", 1)[-1]) > 1
} | {alias for aliases in KEY_ALIASES.values() for alias in aliases if "+" not in alias}
"""Keys Textual names by a word (``escape``, ``f5``, ``pageup``, ``backslash`` ...), from ``textual.keys``."""


_SAME_KEY = {alias: key for key, aliases in KEY_ALIASES.items() for alias in aliases}
"""Names of one key: a binding to ``ctrl+i`` fires on Tab (``textual.keys.KEY_ALIASES``)."""


def _name(key: str) -> str:
    """Textual's name for a key as written in a binding: ``?`` is ``question_mark``."""
    return _character_to_key(key) if len(key) == 1 else key


def _character(base: str) -> str | None:
    """The character a key name stands for, if Textual names a typed character so (``slash``: ``/``)."""
    character = key_to_character(REPLACED_KEYS.get(base, base))
    if character is None or not character.isprintable() or _character_to_key(character) != base:
        return None
    # a character a keyboard types (``question_mark``, ``pound_sign``), not any Unicode name (``banana``)
    if ord(character) < 0x100 or unicodedata.category(character)[0] in "LN":
        return character
    return None


def key_problem(key: str) -> str | None:
    """Why ``key`` is not a key Textual can report (None: it is one), e.g. ``ctrl+banana is not a key``."""
    if not key:
        return "an empty key name"
    *modifiers, base = key.split("+")
    if not base or not all(modifiers):
        return f"{key} is not a key (a + key is written plus)"
    lower = key.lower()
    hint = f" (key names are lower case: {lower})" if lower != key and key_problem(lower) is None else ""
    unknown = [m for m in modifiers if m not in MODIFIERS]
    if unknown:
        return f"{key} is not a key" + (hint or f" ({unknown[0]} is not a modifier: {', '.join(MODIFIERS)})")
    if len(set(modifiers)) != len(modifiers):
        return f"{key} is not a key (a modifier is repeated)"
    if modifiers != sorted(modifiers):
        return f"{key} is not a key (Textual names it {'+'.join([*sorted(modifiers), base])})"
    if base in _NAMED:
        return None
    if len(base) == 1:  # a character: Textual names letters and digits by themselves, the rest by a word
        if not base.isprintable() or base.isspace():
            return f"{key!r} is not a key"
        if modifiers and _name(base) != base:
            return f"{key} is not a key (Textual names it {'+'.join([*modifiers, _name(base)])})"
        if modifiers and base.isupper():
            return f"{key} is not a key (Textual names it {'+'.join(sorted({*modifiers, 'shift'}))}+{base.lower()})"
    elif _character(base) is None:
        return f"{key} is not a key{hint}"
    if modifiers == ["shift"]:
        return f"{key} is not a key (Shift with a character types another character: name that one)"
    return None


def printable(key: str) -> bool:
    """A key that types a character into a text box (``r``, ``R``, ``question_mark``, ``space``)."""
    if key in _NAMED:
        return key == "space"
    return "+" not in key and (len(key) == 1 or _character(key) is not None)


@dataclass(frozen=True)
class Scope:
    """Bindings active together: a screen, the widget that has the focus there, and the app's."""

    where: str
    screen: str
    """Class name of the screen (a test holds its bindings to this scope)."""
    bindings: tuple[Binding, ...]
    focus: str | None = None
    """What has the focus: ``"text"`` (a TextArea), ``"field"`` (an Input), ``"list"``, ``"button"``."""
    focus_name: str = ""

    @property
    def typing(self) -> bool:
        return self.focus in ("text", "field")


SCOPES = (
    Scope("the chat screen", "ChatScreen", (*CHAT, *COMPOSER), "text", "the message box"),
    Scope("the system prompt dialog", "SystemPromptScreen", (*DIALOG, *SAVE), "text", "the system prompt box"),
    Scope("the sampling dialog", "SamplingScreen", tuple(DIALOG), "field", "the sampling fields"),
    Scope("the sessions screen", "SessionsScreen", (*DIALOG, *SESSIONS), "field", "the search box"),
    Scope("the rename dialog", "RenameScreen", tuple(DIALOG), "field", "the name box"),
    Scope("the Hub", "HubScreen", (*DIALOG, *HUB), "field", "the search box"),
    Scope("the Hub", "HubScreen", (*DIALOG, *HUB), "list", "the lists"),
    Scope("the delete question", "ConfirmScreen", (*DIALOG, *CONFIRM), "button", "the buttons"),
    Scope("the model picker", "ModelPickerScreen", tuple(DIALOG), "list", "the list"),
    Scope("the help screen", "HelpScreen", tuple(HELP), "list", "the list"),
    Scope("the no-model screen", "NoModelScreen", tuple(WELCOME)),
)


@dataclass(frozen=True)
class _Slot:
    """One key of one binding, in a scope."""

    key: str
    action: str
    """Actions of app-level bindings carry their ``app.`` prefix: Ctrl+Q quits from every binding."""
    label: str
    binding_id: str | None
    what: str


@cache
def _textual_bindings(focus: str | None) -> tuple[tuple[Binding, bool, str], ...]:
    """Textual's own bindings in a scope: ``(binding, app-level, where it lives)``."""
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import Button, DataTable, Input, TextArea

    palette = Binding(App.COMMAND_PALETTE_BINDING, "command_palette", "Command palette", priority=True)
    found = [(b, True, "built into Textual") for b in (*App.BINDINGS, palette)]
    found += [(b, False, "built into Textual") for b in Screen.BINDINGS]
    widget = {"text": TextArea, "field": Input, "list": DataTable, "button": Button}.get(focus or "")
    found += [(b, False, "") for b in getattr(widget, "BINDINGS", ())]
    return tuple(found)


def _slots(scope: Scope, keymap: dict[str, str]) -> list[_Slot]:
    slots = []
    everything = [(b, True, None) for b in APP] + [(b, False, None) for b in scope.bindings]
    for binding, app_level, owner in everything + list(_textual_bindings(scope.focus)):
        action = binding.action
        if app_level and not action.startswith("app."):
            action = f"app.{action}"
        if binding.id:
            keys, label, what = keymap.get(binding.id, binding.key), binding.id, f"{binding.description} ({binding.id})"
        else:
            keys, label = binding.key, f"{owner or scope.focus}:{binding.action}"
            what = binding.description or binding.action
            if owner:  # Textual's own
                what = f"{what} ({owner})"
            elif owner is not None:  # the focused widget's own
                what = f"{what} in {scope.focus_name}"
        for key in keys.split(","):
            name = _name(key.strip())
            slots.append(_Slot(_SAME_KEY.get(name, name), action, label, binding.id, what))
    return slots


def _clashes(scope: Scope, keymap: dict[str, str]) -> list[tuple[str, _Slot, _Slot]]:
    """``(key, slot, other slot)`` for every key that does two different things in ``scope``."""
    by_key: dict[str, list[_Slot]] = {}
    for slot in _slots(scope, keymap):
        by_key.setdefault(slot.key, []).append(slot)
    return [
        (key, a, b)
        for key, slots in by_key.items()
        for a in slots
        for b in slots
        if a.label != b.label and a.action != b.action
    ]


@cache
def _by_design(where: str, focus: str | None) -> frozenset[tuple[str, str, str]]:
    """Keys that do two things in the defaults, on purpose (F1 opens help, and closes it there)."""
    scope = next(s for s in SCOPES if s.where == where and s.focus == focus)
    return frozenset((key, a.label, b.label) for key, a, b in _clashes(scope, {}))


def check_keymap(keymap: dict[str, str]) -> list[str]:
    """One line per bad ``[keys]`` entry: ``"chat.regenerate" = "ctrl+banana": ctrl+banana is not a key``.

    An entry is bad when its binding id is unknown, a key is not one Textual can report, or a
    key would do two things on one screen (Textual's own keys and the app's included).
    """
    problems: list[str] = []
    reported: set[frozenset[str]] = set()
    for binding_id, value in keymap.items():
        entry = f'"{binding_id}" = "{value}"'
        if binding_id not in IDS:
            problems.append(f"{entry}: no binding has the id {binding_id} (F1 lists the ids)")
            continue
        written = [k.strip() for k in value.split(",")]
        problem = next((p for p in map(key_problem, map(_name, written)) if p), None)
        problem = problem or _clash(binding_id, written, keymap, reported)
        if problem:
            problems.append(f"{entry}: {problem}")
    return problems


def _clash(binding_id: str, written: list[str], keymap: dict[str, str], reported: set[frozenset[str]]) -> str | None:
    names = {_SAME_KEY.get(_name(k), _name(k)): k for k in written}
    for scope in SCOPES:
        if not any(b.id == binding_id for b in (*APP, *scope.bindings)):
            continue
        typed = next((k for k in written if printable(_name(k))), None)
        if scope.typing and typed is not None:
            return (
                f"{typed} types text in {scope.focus_name} on {scope.where}: "
                "use a key with ctrl or alt, or a function key"
            )
        allowed = _by_design(scope.where, scope.focus)
        for key, mine, other in _clashes(scope, keymap):
            if mine.label != binding_id or key not in names or (key, mine.label, other.label) in allowed:
                continue
            pair = frozenset((key, mine.label, other.label))
            if pair not in reported:
                reported.add(pair)
                return f"{names[key]} is already {other.what} on {scope.where}"
    return None
