"""The settings file: defaults, validation with clear errors, the template, and CLI overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinkchat.cli import build_parser, settings_for_run
from sinkchat.settings import Settings, SettingsError, load_settings, write_template


def test_missing_file_means_defaults(isolated_settings: Path) -> None:
    assert not isolated_settings.exists()
    settings = load_settings()
    assert settings == Settings()
    assert settings.cache.n_ctx == 4096 and settings.cache.sink_tokens == 4 and settings.cache.keep_system_prompt


def test_full_file_round_trips(isolated_settings: Path, tmp_path: Path) -> None:
    isolated_settings.parent.mkdir(parents=True)
    isolated_settings.write_text(
        f"""
[model]
default = "~/models/a.gguf"
dir = "{tmp_path}"
n_gpu_layers = 10
[cache]
n_ctx = 1024
sink_tokens = 8
keep_system_prompt = false
discard = 100
[chat]
system_prompt = "Be brief."
max_tokens = 200
[sampling]
temperature = 0.2
seed = 7
[ui]
theme = "nord"
[keys]
"chat.regenerate" = "ctrl+g"
"""
    )
    s = load_settings()
    assert s.model.default == Path("~/models/a.gguf").expanduser()
    assert s.models_dir() == tmp_path
    assert (s.cache.n_ctx, s.cache.sink_tokens, s.cache.keep_system_prompt, s.cache.discard) == (1024, 8, False, 100)
    assert s.sampling.temperature == 0.2 and s.sampling.seed == 7
    assert s.keys == {"chat.regenerate": "ctrl+g"}
    options = s.load_options()
    assert options["n_ctx"] == 1024 and options["n_gpu_layers"] == 10 and options["system_prompt"] == "Be brief."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[cache]\nn_ctx = 10\n", "cache.n_ctx: Input should be greater than or equal to 64"),
        ("[cache]\nsink_tokens = -1\n", "cache.sink_tokens"),
        ("[sampling]\ntemperature = 'hot'\n", "sampling.temperature"),
        ("[cache]\nnctx = 100\n", "cache.nctx: Extra inputs are not permitted"),
        ("[model]\ntype_k = 'q3'\n", "model.type_k"),
        ("[cache\nn_ctx = 1\n", "is not valid TOML"),
    ],
)
def test_bad_settings_name_the_problem(isolated_settings: Path, text: str, message: str) -> None:
    isolated_settings.parent.mkdir(parents=True)
    isolated_settings.write_text(text)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert message in str(caught.value) and str(isolated_settings) in str(caught.value)


def test_the_template_is_valid_and_never_overwritten(isolated_settings: Path) -> None:
    path = write_template()
    assert load_settings(path) == Settings()
    with pytest.raises(SettingsError, match="already exists"):
        write_template()


def test_command_line_overrides_the_file(isolated_settings: Path) -> None:
    isolated_settings.parent.mkdir(parents=True)
    isolated_settings.write_text("[cache]\nn_ctx = 1024\n[chat]\nmax_tokens = 300\n[sampling]\ntop_k = 5\n")
    args = build_parser().parse_args(
        ["run", "--n-ctx", "512", "--temperature", "0", "--max-tokens", "0", "--no-keep-system-prompt"]
    )
    s = settings_for_run(args)
    assert s.cache.n_ctx == 512 and not s.cache.keep_system_prompt
    assert s.sampling.temperature == 0 and s.sampling.top_k == 5  # untouched values stay
    assert s.chat.max_tokens is None  # 0 = no limit


def test_cli_reports_a_broken_settings_file(isolated_settings: Path) -> None:
    isolated_settings.parent.mkdir(parents=True)
    isolated_settings.write_text("[cache]\nn_ctx = 'big'\n")
    result = subprocess.run(
        [sys.executable, "-m", "sinkchat", "run", "--plain"], input="", capture_output=True, text=True, env=os.environ
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cache.n_ctx" in result.stderr and str(isolated_settings) in result.stderr


def test_config_command(isolated_settings: Path) -> None:
    run = lambda *a: subprocess.run([sys.executable, "-m", "sinkchat", "config", *a], capture_output=True, text=True)  # noqa: E731
    assert run("path").stdout.strip() == str(isolated_settings)
    assert run("init").returncode == 0 and isolated_settings.exists()
    assert '"n_ctx": 4096' in run("show").stdout
