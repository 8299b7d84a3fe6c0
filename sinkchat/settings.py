"""User settings: a TOML file under the platform's config dir, validated with pydantic.

    [model]                       [cache]                 [chat]
    default = "~/models/x.gguf"   n_ctx = 4096            system_prompt = "You are brief."
    dir = "~/models"              sink_tokens = 4         max_tokens = 1024
    n_gpu_layers = -1             keep_system_prompt = true
                                  discard = 512
    [sampling]                    [ui]                    [keys]
    temperature = 0.7             theme = "nord"          "chat.regenerate" = "ctrl+t"

The file is optional: a missing one at the default location means the defaults.
``SINKCHAT_CONFIG`` points at another file, which must then exist.  Errors are one line
that names the file, the line or the setting, and what is wrong.
"""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.options import KVCacheType
from models.sampler import SamplingSettings
from sinkchat.config import SinkSettings
from sinkchat.errors import SinkchatError

APP_NAME = "sinkchat"
CONFIG_ENV = "SINKCHAT_CONFIG"
DATA_ENV = "SINKCHAT_DATA_DIR"


class SettingsError(SinkchatError):
    """The settings file cannot be read or has invalid values."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    default: Path | None = Field(None, description="model loaded when none is given")
    dir: Path | None = Field(None, description="folder of GGUF files for the model picker")
    n_gpu_layers: int | None = Field(None, ge=-1, description="-1 all, 0 CPU only; default: all on a GPU build")
    threads: int | None = Field(None, ge=1)
    flash_attn: Literal["auto", "on", "off"] = "auto"
    type_k: KVCacheType = "f16"
    type_v: KVCacheType = "f16"
    chat_template: str | None = Field(
        None, description="a shipped template's name or a Jinja file, instead of the model's own"
    )

    @field_validator("default", "dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None


class CacheSettings(SinkSettings):
    n_ctx: int = Field(4096, ge=64, le=1 << 20, description="KV-cache size in tokens")


class ChatSettings(_Section):
    system_prompt: str | None = None
    max_tokens: int | None = Field(1024, ge=1, description="reply limit; unset for none")


class SessionsSettings(_Section):
    dir: Path | None = Field(None, description="where sessions are saved (default: the user data dir)")
    max_snapshots: int = Field(32, ge=0, description="sessions whose KV cache is kept for instant resume")
    max_snapshot_gb: float = Field(8.0, ge=0, description="disk space all KV snapshots may take together")

    @field_validator("dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None


class UISettings(_Section):
    theme: str = "textual-dark"


class Settings(_Section):
    model: ModelSettings = ModelSettings()
    cache: CacheSettings = CacheSettings()
    chat: ChatSettings = ChatSettings()
    sampling: SamplingSettings = SamplingSettings()
    sessions: SessionsSettings = SessionsSettings()
    ui: UISettings = UISettings()
    keys: dict[str, str] = Field(default_factory=dict, description="binding id -> key(s), e.g. 'ctrl+g'")

    def models_dir(self) -> Path:
        return self.model.dir or default_models_dir()

    def sessions_dir(self) -> Path:
        return self.sessions.dir or default_sessions_dir()

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Chat.load`` (its ``llama_options`` included)."""
        options: dict[str, Any] = {
            "n_ctx": self.cache.n_ctx,
            "sink_tokens": self.cache.sink_tokens,
            "keep_system_prompt": self.cache.keep_system_prompt,
            "discard": self.cache.discard,
            "system_prompt": self.chat.system_prompt,
            "sampling": self.sampling,
            "flash_attn": self.model.flash_attn,
            "type_k": self.model.type_k,
            "type_v": self.model.type_v,
        }
        if self.model.n_gpu_layers is not None:
            options["n_gpu_layers"] = self.model.n_gpu_layers
        if self.model.threads is not None:
            options["n_threads"] = self.model.threads
        if self.model.chat_template is not None:
            options["chat_template"] = self.model.chat_template
        return options


def config_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_path

    return user_config_path(APP_NAME, appauthor=False) / "config.toml"


def default_models_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False) / "models"


def default_sessions_dir() -> Path:
    """``SINKCHAT_DATA_DIR`` (tests, portable installs), else the platform's user data dir."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override).expanduser() / "sessions"
    from platformdirs import user_data_path

    return user_data_path(APP_NAME, appauthor=False) / "sessions"


def describe_validation(exc: ValidationError) -> str:
    """Every problem on one line: ``cache.n_ctx: Input should be greater than or equal to 64; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())


_NOT_REGULAR = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``, refused unless it is a regular file: a FIFO would wait for a writer forever."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
            raise SettingsError(f"{path} is not a regular file ({kind}); settings are a TOML file")
        return fh.read()


def load_settings(path: Path | None = None) -> Settings:
    """Read the settings file: the defaults when there is none at the default location.

    A file named explicitly (``path``, or ``SINKCHAT_CONFIG``) must exist, and a ``[model] dir``
    must be a folder: a typo there would otherwise pass unnoticed.
    """
    from_env = path is None and bool(os.environ.get(CONFIG_ENV))
    explicit = path is not None or from_env
    path = path or config_path()
    try:
        raw = _read_regular(path)
    except FileNotFoundError as exc:
        if not explicit:
            return Settings()
        named = f"{CONFIG_ENV} names {path}" if from_env else f"the settings file {path}"
        raise SettingsError(f"{named}, which does not exist (sinkchat config init creates it)") from exc
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path} is not UTF-8 text") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from exc
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(f"{path} has invalid settings: {describe_validation(exc)}") from exc
    folder = settings.model.dir
    if folder is not None and not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise SettingsError(f"{path} has invalid settings: model.dir: {folder} {why}")
    return settings


TEMPLATE = """\
# sinkchat settings.  Every entry is optional; delete what you do not need.

[model]
# default = "~/models/my-model.gguf"    # loaded when `sinkchat run` gets no --model
# dir = "~/models"                      # GGUF files listed in the model picker
# n_gpu_layers = -1                     # -1 all, 0 CPU only (default: all on a GPU build)
# threads = 4
# flash_attn = "auto"                   # auto | on | off
# type_k = "f16"                        # KV cache types: f16, q8_0, q4_0, ...
# type_v = "f16"
# chat_template = "chatml"              # instead of each model's own: a name (sinkchat models templates) or a file

[cache]
n_ctx = 4096                            # the fixed memory budget, in tokens
sink_tokens = 4                         # first tokens always kept (attention sinks)
keep_system_prompt = true               # pin the whole system prompt
# discard = 1024                        # tokens a shift aims to free (default: window / 4)

[chat]
# system_prompt = "You are a helpful assistant."
max_tokens = 1024

[sampling]
temperature = 0.7
top_k = 40
top_p = 0.95
min_p = 0.05
repeat_penalty = 1.1
# seed = 42

[sessions]
# dir = "~/sinkchat-sessions"           # default: the user data dir
max_snapshots = 32                      # sessions whose KV cache is kept for instant resume
max_snapshot_gb = 8                     # disk space all snapshots may take together

[ui]
theme = "textual-dark"

[keys]
# Remap any binding by its id (F1 lists them), e.g.:
# "chat.regenerate" = "ctrl+t"
"""


def write_template(path: Path | None = None) -> Path:
    """Create a commented settings file; never overwrites an existing one."""
    path = path or config_path()
    if path.exists():
        raise SettingsError(f"{path} already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(TEMPLATE, encoding="utf-8")
    tmp.replace(path)
    return path
