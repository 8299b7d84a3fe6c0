"""A loaded GGUF model: weights, vocabulary and chat template, through llama.cpp's C API.

sinkchat drives llama.cpp through llama-cpp-python's low-level bindings rather than its
``Llama`` class: ``Llama`` keeps its own ``n_tokens``/``input_ids`` bookkeeping, which a
context shift would silently desynchronise.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

from models import llama_log
from models.chat_template import ChatTemplate
from models.errors import ModelError, ModelLoadError, UnsupportedModelError
from models.gguf_meta import GGUFInfo, read_gguf, regular_file
from models.local_models import split_parts
from models.native import NativeHandle

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def ensure_backend() -> None:
    """Initialise llama.cpp once per process, with its log routed to Python logging."""
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        import llama_cpp

        llama_log.install()
        llama_cpp.llama_backend_init()
        _backend_ready = True


def backend_version() -> str:
    """llama-cpp-python's version: its saved KV state is only read back by the same build."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "unknown"


def _describe_failure(path: Path, info: GGUFInfo) -> ModelError:
    problems = llama_log.recent_problems()
    text = "\n".join(problems)
    detail = llama_log.explain(problems)
    if "unknown model architecture" in text:
        return UnsupportedModelError(
            f"{path.name}: this llama.cpp build does not support the architecture "
            f"{info.architecture!r}. Upgrade llama-cpp-python or choose another model.{detail}"
        )
    if "not within the file bounds" in text or "truncated" in text:
        return ModelLoadError(f"{path.name} is damaged or incomplete: download it again.{detail}")
    if "alloc" in text.lower() or "memory" in text.lower():
        return ModelLoadError(
            f"not enough memory to load {path.name}: try fewer GPU layers or a smaller model.{detail}"
        )
    return ModelLoadError(f"llama.cpp could not load {path.name}.{detail}")


class LlamaModel(NativeHandle):
    """Model weights and vocabulary.  Thread-compatible: use from one thread at a time."""

    def __init__(self, path: str | Path, *, n_gpu_layers: int | None = None, use_mmap: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.info = read_gguf(self.path)
        for part in split_parts(self.path)[1:]:  # llama.cpp opens the other parts of a split model itself
            regular_file(part)
        ensure_backend()
        import llama_cpp

        self._lib = llama_cpp
        params = llama_cpp.llama_model_default_params()
        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        asked = n_gpu_layers
        if n_gpu_layers is None:
            n_gpu_layers = -1 if gpu else 0
        self.n_gpu_layers = n_gpu_layers
        # "All layers": 999, the value llama.cpp's own tools use.
        params.n_gpu_layers = 999 if n_gpu_layers < 0 else n_gpu_layers
        fields = {name for name, *_ in type(params)._fields_}
        if "load_mode" in fields:  # llama.cpp replaced use_mmap with a load mode (default: auto)
            if not use_mmap:
                params.load_mode = 0  # LLAMA_LOAD_MODE_NONE: read the file into memory
        elif "use_mmap" in fields:
            params.use_mmap = use_mmap
        llama_log.clear()
        ptr = llama_cpp.llama_model_load_from_file(str(self.path).encode(), params)
        if not ptr:
            raise _describe_failure(self.path, self.info)
        self.ptr = ptr
        if not llama_cpp.llama_model_has_decoder(ptr):
            self.close()
            raise UnsupportedModelError(f"{self.path.name} has no text decoder; it cannot chat")
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_layer = llama_cpp.llama_model_n_layer(ptr)
        self.gpu_notice: str | None = None
        """Set when GPU layers were asked for and this build cannot offload: say it once, then run on the CPU."""
        if asked and not gpu:
            self.gpu_notice = (
                f"this llama.cpp build has no GPU backend, so all {self.n_layer} layers run on the CPU "
                f"(n_gpu_layers {asked} has no effect)"
            )
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(ptr)
        self.n_swa = int(llama_cpp.llama_model_n_swa(ptr))
        """Sliding window of the model's SWA layers (0: it has none)."""
        self.bos = llama_cpp.llama_vocab_bos(self.vocab)
        self.eos = llama_cpp.llama_vocab_eos(self.vocab)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._pieces: dict[tuple[int, bool], bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    @property
    def name(self) -> str:
        """The file name people chose and recognise (``general.name`` is often a training-run label)."""
        return self.path.stem

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``parse_special`` turns template markers into their special tokens."""
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        while True:
            out = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self.vocab, raw, len(raw), out, cap, add_special, parse_special)
            if n >= 0:
                return list(out[:n])
            cap = -n

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token (possibly part of a UTF-8 character); control tokens render empty unless ``special``."""
        key = (token, special)
        piece = self._pieces.get(key)
        if piece is None:
            buf = self._piece_buf
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
            piece = buf.raw[:n]
            self._pieces[key] = piece
        return piece

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return b"".join(self.token_to_piece(t, special=special) for t in tokens).decode("utf-8", errors="replace")

    def is_eog(self, token: int) -> bool:
        """End of generation: EOS, EOT, or a template's end-of-turn token."""
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, token: int) -> str:
        return self.token_to_piece(token, special=True).decode("utf-8", errors="replace")

    def chat_template(self, *, source: str | None = None, name: str | None = None) -> ChatTemplate | None:
        """The template from the GGUF metadata (None for a base model without one), or ``source`` instead."""
        if source is None:
            source = self.info.chat_template
            if source is None:
                return None
            name = name or "the GGUF's own"
        bos = self.token_text(self.bos) if self.bos >= 0 else ""
        eos = self.token_text(self.eos) if self.eos >= 0 else ""
        return ChatTemplate(source, bos_token=bos, eos_token=eos, name=name or "template")

    def _free(self, ptr: object) -> None:
        self._lib.llama_model_free(ptr)
