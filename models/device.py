"""Where a model runs: the GPU or CPU backend llama.cpp found, and how many layers it holds."""

from __future__ import annotations

import ctypes
from functools import cache

from pydantic import BaseModel, ConfigDict

# enum ggml_backend_dev_type (ggml-backend.h)
_CPU, _GPU, _IGPU = 0, 1, 2


class Device(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    is_gpu: bool


@cache
def backend_devices() -> tuple[Device, ...]:
    """The devices of this llama.cpp build (CPU, CUDA0, Metal, Vulkan0 ...)."""
    from llama_cpp._ggml import libggml

    from models.llama_model import ensure_backend

    ensure_backend()
    lib = libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    for fn in (lib.ggml_backend_dev_name, lib.ggml_backend_dev_description):
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    devices = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        devices.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"?").decode(errors="replace"),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                is_gpu=lib.ggml_backend_dev_type(dev) in (_GPU, _IGPU),
            )
        )
    return tuple(devices)


def describe_placement(n_gpu_layers: int, n_layer: int) -> str:
    """``CPU``, or e.g. ``CUDA0 · 30/30 layers`` when layers are offloaded."""
    try:
        gpus = [d for d in backend_devices() if d.is_gpu]
    except (OSError, AttributeError):  # an unusual build without the device registry
        gpus = []
    if not gpus or n_gpu_layers == 0:
        return "CPU"
    offloaded = n_layer if n_gpu_layers < 0 else min(n_gpu_layers, n_layer)
    return f"{gpus[0].name} · {offloaded}/{n_layer} layers"


def gpu_memory() -> list[tuple[str, int, int]]:
    """``(name, free bytes, total bytes)`` of each GPU device of this build (empty on CPU-only builds)."""
    try:
        devices = backend_devices()
    except (OSError, AttributeError):
        return []
    if not any(d.is_gpu for d in devices):
        return []
    from llama_cpp._ggml import libggml

    lib = libggml
    size_p = ctypes.POINTER(ctypes.c_size_t)
    lib.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size_p, size_p]
    lib.ggml_backend_dev_memory.restype = None
    out = []
    for i, device in enumerate(devices):
        if not device.is_gpu:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(lib.ggml_backend_dev_get(i), ctypes.byref(free), ctypes.byref(total))
        out.append((device.name, int(free.value), int(total.value)))
    return out
