"""The settings file: defaults, validation with clear errors, the template, and CLI overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sinkchat.cli import build_parser, settings_for_run
from sinkchat.settings import CONFIG_ENV, Settings, SettingsError, config_path, load_settings, write_template


@pytest.fixture(autouse=True)
def no_settings_file(isolated_settings: Path) -> Path:
    """``SINKCHAT_CONFIG`` names a file that is not there yet: each test writes what it needs."""
    isolated_settings.unlink(missing_ok=True)
    return isolated_settings


def test_missing_file_at_the_default_place_means_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import platformdirs

    monkeypatch.delenv(CONFIG_ENV)
    monkeypatch.setattr(platformdirs, "user_config_path", lambda *a, **k: tmp_path / "nowhere" / "sinkchat")
    assert config_path() == tmp_path / "nowhere" / "sinkchat" / "config.toml"
    settings = load_settings()
    assert settings == Settings()
    assert settings.cache.n_ctx == 4096 and settings.cache.sink_tokens == 4 and settings.cache.keep_system_prompt


def test_a_missing_file_named_by_sinkchat_config_is_an_error(isolated_settings: Path) -> None:
    assert not isolated_settings.exists()
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"SINKCHAT_CONFIG names {isolated_settings}, which does not exist (sinkchat config init creates it)"
    )
    result = cli("config", "show")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "SINKCHAT_CONFIG names" in result.stderr
    assert cli("config", "init").returncode == 0 and load_settings() == Settings()  # how it comes to exist


def test_a_fifo_as_the_settings_file_is_refused_not_waited_on(isolated_settings: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(isolated_settings)
    result = cli("config", "show", timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr
        == f"sinkchat: error: {isolated_settings} is not a regular file (a FIFO); settings are a TOML file\n"
    )
    with pytest.raises(SettingsError, match="a directory"):
        load_settings(isolated_settings.parent)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sinkchat", *args], input="", capture_output=True, text=True, timeout=timeout
    )


def test_several_problems_are_one_line(isolated_settings: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text("[cache]\nn_ctx = 10\n[model]\ntype_k = 'q3'\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith(f"{isolated_settings} has invalid settings: ")
    assert "model.type_k: " in str(caught.value) and "; cache.n_ctx: Input should be greater" in str(caught.value)
    for result in (cli("config", "show"), cli("run", "--plain")):
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    isolated_settings.write_text("")
    given = cli("run", "--plain", "--cache-type-k", "q3", "--cache-type-v", "q2")
    assert given.returncode == 2 and given.stderr.count("\n") == 1, given.stderr
    assert "type_k: Input should be" in given.stderr and "; type_v: Input should be" in given.stderr


def test_a_models_folder_that_is_not_there_is_named(isolated_settings: Path, tmp_path: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text(f"[model]\ndir = {str(tmp_path / 'modles')!r}\n")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert (
        str(caught.value)
        == f"{isolated_settings} has invalid settings: model.dir: {tmp_path / 'modles'} does not exist"
    )
    result = cli("models", "list")
    assert result.returncode == 2 and result.stderr == f"sinkchat: error: {caught.value}\n"
    (tmp_path / "modles").write_text("")
    with pytest.raises(SettingsError, match="model.dir: .* is not a folder"):
        load_settings()


def test_a_missing_default_model_names_the_settings_file(isolated_settings: Path, tmp_path: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text(f"[model]\ndefault = {str(tmp_path / 'gone.gguf')!r}\n")
    result = cli("run", "--plain")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"sinkchat: error: model file not found: {tmp_path / 'gone.gguf'} (the [model] default of {isolated_settings})\n"
    )


def test_full_file_round_trips(isolated_settings: Path, tmp_path: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
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
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
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
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
    isolated_settings.write_text("[cache]\nn_ctx = 1024\n[chat]\nmax_tokens = 300\n[sampling]\ntop_k = 5\n")
    args = build_parser().parse_args(
        ["run", "--n-ctx", "512", "--temperature", "0", "--max-tokens", "0", "--no-keep-system-prompt"]
    )
    s = settings_for_run(args)
    assert s.cache.n_ctx == 512 and not s.cache.keep_system_prompt
    assert s.sampling.temperature == 0 and s.sampling.top_k == 5  # untouched values stay
    assert s.chat.max_tokens is None  # 0 = no limit


def test_cli_reports_a_broken_settings_file(isolated_settings: Path) -> None:
    isolated_settings.parent.mkdir(parents=True, exist_ok=True)
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
