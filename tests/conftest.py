"""Shared fixtures: the embedded SmolLM2 model for the slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.default_model import INSTALL_HINT, default_model_path
from sinkchat.settings import CONFIG_ENV, DATA_ENV


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = default_model_path()
    if path is None:
        pytest.fail(f"the test suite needs the embedded model: {INSTALL_HINT}")
    return path


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Never touch the developer's own settings or sessions; a test writes its own when it needs them."""
    path = tmp_path / "config" / "config.toml"
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    return path
