"""Reading a ggml tensor seen by llama.cpp's eval callback, through the bundled ``libggml-base``.

llama-cpp-python binds llama.h but not the ggml tensor functions, so the few needed here
are loaded from the shared library it ships next to ``libllama``.  Only ``type`` and
``ne`` are read from the struct itself: they open ``struct ggml_tensor`` and have kept
their place for years; the byte count from ``ggml_nbytes`` cross-checks them on every read.
"""

from __future__ import annotations

import ctypes
import functools
from typing import TYPE_CHECKING

from models.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

GGML_TYPE_F32 = 0
GGML_MAX_DIMS = 4


class _TensorHead(ctypes.Structure):
    """The first fields of ``struct ggml_tensor`` (ggml.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
    ]


@functools.cache
def _lib() -> ctypes.CDLL:
    import pathlib

    import llama_cpp
    from llama_cpp._ctypes_extensions import load_shared_library

    lib = load_shared_library("ggml-base", pathlib.Path(llama_cpp.__file__).parent / "lib")
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
    lib.ggml_nbytes.restype = ctypes.c_size_t
    lib.ggml_is_contiguous.argtypes = [ctypes.c_void_p]
    lib.ggml_is_contiguous.restype = ctypes.c_bool
    lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    lib.ggml_backend_tensor_get.restype = None
    return lib


def tensor_name(tensor: int) -> str:
    """The name llama.cpp gave a graph node, e.g. ``kq_soft_max-12``."""
    name = _lib().ggml_get_name(tensor)
    return name.decode("utf-8", errors="replace") if name else ""


def read_f32(tensor: int) -> np.ndarray:
    """A host copy of a contiguous f32 tensor, shaped in C order (``ne`` reversed).

    ``ggml_backend_tensor_get`` copies from whichever backend holds the tensor (CPU,
    CUDA, Metal), so the same call serves every build.
    """
    import numpy as np

    lib = _lib()
    head = _TensorHead.from_address(tensor)
    shape = tuple(int(n) for n in head.ne)
    nbytes = int(lib.ggml_nbytes(tensor))
    count = 1
    for n in shape:
        count *= n
    if head.type != GGML_TYPE_F32 or nbytes != 4 * count or not lib.ggml_is_contiguous(tensor):
        raise ModelError(
            f"unexpected tensor {tensor_name(tensor)}: type {head.type}, shape {shape}, {nbytes} bytes; "
            "this llama.cpp build lays tensors out differently"
        )
    out = np.empty(shape[::-1], dtype=np.float32)
    lib.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, nbytes)
    return out
