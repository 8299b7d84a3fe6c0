"""GGUF files of a Hub repository as a person picks them: one entry per model, its quantization and size.

Split models (``name-00001-of-00003.gguf``) are one entry with all their parts in order;
files that are not chat models (``mmproj`` vision projectors, ``imatrix`` data) are kept
apart, as llama.cpp's ``-hf`` does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

_SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
# Longest names first, so "Q4_K_M" wins over "Q4_K" and "IQ4_XS" over "Q4".
_QUANTS = sorted(
    [
        *(f"IQ{b}_{s}" for b in (1, 2, 3, 4) for s in ("XXS", "XS", "S", "M", "NL")),
        *(f"Q{b}_K_{s}" for b in (2, 3, 4, 5, 6) for s in ("XL", "S", "M", "L")),
        *(f"Q{b}_K" for b in (2, 3, 4, 5, 6, 8)),
        "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8",
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q6_0", "Q8_0", "Q8_1",
        "TQ1_0", "TQ2_0", "MXFP4", "F16", "BF16", "F32", "FP16", "FP32",
    ],
    key=len,
    reverse=True,
)  # fmt: skip
_QUANT = re.compile(r"(?<![A-Z0-9])(" + "|".join(_QUANTS) + r")(?![A-Z0-9])", re.IGNORECASE)

Kind = Literal["model", "mmproj", "imatrix", "other"]


class HubFile(BaseModel):
    """One file of a repository, with the size and SHA-256 the Hub's LFS metadata gives."""

    path: str
    size: int
    sha256: str | None = None


class GGUFChoice(BaseModel):
    """One pickable model file (all its split parts)."""

    name: str
    kind: Kind
    quant: str | None
    parts: list[HubFile]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def first(self) -> str:
        """The file llama.cpp is given; it finds the other parts next to it."""
        return self.parts[0].path

    @property
    def complete(self) -> bool:
        match = _SPLIT.match(self.parts[0].path.rsplit("/", 1)[-1])
        return match is None or len(self.parts) == int(match.group("total"))


def parse_quant(filename: str) -> str | None:
    """``Q4_K_M`` from ``Llama-3.2-1B-Instruct-Q4_K_M.gguf``; None when the name does not say."""
    found = _QUANT.findall(filename.rsplit("/", 1)[-1])
    if not found:
        return None
    quant = found[-1].upper()
    return {"FP16": "F16", "FP32": "F32"}.get(quant, quant)


def kind_of(filename: str) -> Kind:
    name = filename.rsplit("/", 1)[-1].lower()
    if not name.endswith(".gguf"):
        return "other"
    if "mmproj" in name:
        return "mmproj"
    if "imatrix" in name:
        return "imatrix"
    return "model"


def group_gguf(files: Iterable[HubFile]) -> list[GGUFChoice]:
    """GGUF files grouped into choices: split parts together, models first, then by size."""
    groups: dict[str, list[tuple[int, HubFile]]] = {}
    for f in files:
        if not f.path.lower().endswith(".gguf"):
            continue
        folder, _, name = f.path.rpartition("/")
        match = _SPLIT.match(name)
        key = f"{folder}/{match.group('stem')}" if match else f.path
        groups.setdefault(key, []).append((int(match.group("part")) if match else 1, f))
    choices = []
    for key, parts in groups.items():
        parts.sort(key=lambda p: p[0])
        files_in_order = [f for _, f in parts]
        name = key.rsplit("/", 1)[-1].removesuffix(".gguf").removesuffix(".GGUF")
        choices.append(
            GGUFChoice(name=name, kind=kind_of(files_in_order[0].path), quant=parse_quant(key), parts=files_in_order)
        )
    order = {"model": 0, "mmproj": 1, "imatrix": 2, "other": 3}
    choices.sort(key=lambda c: (order[c.kind], c.size, c.name))
    return choices
