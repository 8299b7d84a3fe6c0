"""Prove the GPU path: placement, speed against the CPU, shifts and snapshots on a GPU-resident cache.

Run on a CUDA (or Metal) build of llama-cpp-python; on a CPU-only build it runs the
same steps with both sides on the CPU and says so.

    python benchmarks/gpu_check.py [--model PATH] [--tokens N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from models.device import backend_devices
from sinkchat import Chat
from sinkchat.chat import resolve_model_path
from sinkchat.session import Session, SessionLibrary

QUESTIONS = [
    "Name three colours.",
    "Tell me a story about a lighthouse keeper.",
    "What is the boiling point of water?",
    "Describe a forest in autumn.",
]


def kl(a: np.ndarray, b: np.ndarray) -> float:
    p, q = (np.exp(x - x.max()) / np.exp(x - x.max()).sum() for x in (a.astype(np.float64), b.astype(np.float64)))
    return float((p * (np.log(p + 1e-300) - np.log(q + 1e-300))).sum())


def endless(path: Path, n_gpu_layers: int, tokens: int, **options) -> tuple[float, Chat]:
    """Raw generation of ``tokens`` tokens through a 256-token cache; tok/s and the chat (open)."""
    chat = Chat.load(path, n_ctx=256, n_gpu_layers=n_gpu_layers, sampling={"temperature": 0.8, "seed": 7}, **options)
    started = time.perf_counter()
    for _ in chat.generate("Once upon a time", max_tokens=tokens, stop_at_eos=False):
        engine = chat.engine
        assert engine.n_cached <= 256 and chat.context.pos_max() == engine.n_cached - 1
    seconds = time.perf_counter() - started
    return chat.last_reply.n_tokens / seconds, chat


def prefill_speed(path: Path, n_gpu_layers: int) -> float:
    chat = Chat.load(path, n_ctx=4096, n_gpu_layers=n_gpu_layers)
    tokens = chat.model.tokenize("The harbour master counted the ships and wrote about the tides. " * 250)[:3000]
    started = time.perf_counter()
    chat.engine.feed(tokens, "raw", 1, logits=False)
    seconds = time.perf_counter() - started
    chat.close()
    return len(tokens) / seconds


def snapshot_round_trip(path: Path, n_gpu_layers: int, n_ctx: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        library = SessionLibrary(Path(folder))
        load = dict(n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, sampling={"temperature": 0, "seed": 1})
        original = Chat.load(path, **load)
        session = Session.new(original, library)
        for q in QUESTIONS:
            "".join(session.send(q, max_tokens=96))
        session.close(close_chat=False)
        out: dict[str, float] = {"shifts": original.engine.shifts, "cached": original.engine.n_cached}
        probe = "And what did I ask first?"
        fresh = Chat.load(path, **load)
        started = time.perf_counter()
        resumed = Session.resume(fresh, library, session.id)
        out["restore_ms"] = (time.perf_counter() - started) * 1000
        out["resume_tokens"] = resumed.resume_tokens
        logits = []
        for chat in (original, fresh):
            chat._feed_user(chat._group + 1, probe)
            logits.append(chat.context.logits())
        out["kl"] = kl(*logits)
        out["max_abs"] = float(np.abs(logits[0] - logits[1]).max())
        out["same_argmax"] = float(int(logits[0].argmax()) == int(logits[1].argmax()))
        resumed.close()
        library.snapshot_path(session.id).unlink()
        rebuilt_chat = Chat.load(path, **load)
        started = time.perf_counter()
        rebuilt = Session.resume(rebuilt_chat, library, session.id)
        out["rebuild_ms"] = (time.perf_counter() - started) * 1000
        rebuilt.close()
        original.close()
        library.close()
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--tokens", type=int, default=2000)
    args = parser.parse_args()
    path = resolve_model_path(args.model)

    devices = backend_devices()
    print("backend devices:", ", ".join(f"{d.name} ({d.description}, gpu={d.is_gpu})" for d in devices))
    gpu = any(d.is_gpu for d in devices)
    if not gpu:
        print("no GPU in this build: the 'GPU' column below is the CPU again")

    on_gpu = Chat.load(path, n_ctx=512, n_gpu_layers=-1)
    print(f"placement with n_gpu_layers=-1: {on_gpu.device} (can_shift={on_gpu.stats.can_shift})")
    on_gpu.close()

    for label, options in (("f16 KV", {}), ("q8_0 K + flash attention", {"type_k": "q8_0", "flash_attn": "on"})):
        gpu_tps, chat = endless(path, -1, args.tokens, **options)
        print(
            f"endless raw generation on GPU, {label}: {chat.last_reply.n_tokens} tokens through n_ctx 256, "
            f"{chat.engine.shifts} shifts, {chat.engine.evicted_tokens} evicted, {gpu_tps:.0f} tok/s; "
            f"cache {chat.engine.n_cached}/256, pos_max {chat.context.pos_max()}"
        )
        chat.close()
    cpu_tps, chat = endless(path, 0, min(args.tokens, 600))
    chat.close()
    gpu_tps, chat = endless(path, -1, min(args.tokens, 600))
    chat.close()
    print(f"decode through a 256-token cache, same run: GPU {gpu_tps:.0f} tok/s vs CPU {cpu_tps:.0f} tok/s "
          f"({gpu_tps / cpu_tps:.1f}x)")  # fmt: skip
    gpu_pp, cpu_pp = prefill_speed(path, -1), prefill_speed(path, 0)
    print(f"prefill of 3000 tokens: GPU {gpu_pp:.0f} tok/s vs CPU {cpu_pp:.0f} tok/s ({gpu_pp / cpu_pp:.1f}x)")

    for n_ctx in (256, 4096):
        r = snapshot_round_trip(path, -1, n_ctx)
        print(
            f"snapshot on GPU, n_ctx {n_ctx}: {r['cached']:.0f} cached tokens, {r['shifts']:.0f} shifts; "
            f"restore {r['restore_ms']:.0f} ms ({r['resume_tokens']:.0f} tokens read) vs rebuild {r['rebuild_ms']:.0f} ms; "
            f"next-token KL {r['kl']:.2e}, max |Δlogit| {r['max_abs']:.3f}, same argmax {bool(r['same_argmax'])}"
        )


if __name__ == "__main__":
    main()
