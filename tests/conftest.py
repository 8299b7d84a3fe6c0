"""Shared fixtures: the embedded SmolLM2 model for the slow tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.default_model import INSTALL_HINT, default_model_path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = default_model_path()
    if path is None:
        pytest.fail(f"the test suite needs the embedded model: {INSTALL_HINT}")
    return path
