"""Single-token decode time with flash attention on and off, alternating, on one loaded model.

Why: sinkchat's default ``flash_attn = "auto"`` lets llama.cpp turn it on for the CPU, where
it was measured to cost decode time (docs/benchmarks.md, endless section).  Each round
creates a fresh context, decodes a short prompt, then ``--tokens`` tokens one at a time,
and prints the median ms/token over the first and the last 500.

    python benchmarks/bench_flash_attn.py [--model PATH] [--n-ctx N] [--tokens N] [--order on off on off]
"""

from __future__ import annotations

import argparse
import statistics
import time

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from sinkchat.chat import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--tokens", type=int, default=1500)
    parser.add_argument("--order", nargs="+", choices=["on", "off", "auto"], default=["on", "off", "on", "off"])
    args = parser.parse_args()
    model = LlamaModel(resolve_model_path(args.model))
    prompt = model.tokenize("Chapter One\n\nThe lighthouse keeper had not spoken")
    print(f"model {model.path.name} · n_ctx {args.n_ctx} · {args.threads} threads · {args.tokens} tokens per round")
    for setting in args.order:
        ctx = LlamaContext(model, LoadOptions(n_ctx=args.n_ctx, n_threads=args.threads, flash_attn=setting))
        ctx.decode(prompt, 0)
        latencies = []
        for pos in range(len(prompt), len(prompt) + args.tokens):
            started = time.perf_counter()
            ctx.decode([prompt[-1]], pos)
            latencies.append(time.perf_counter() - started)
        first, last = (statistics.median(part) * 1000 for part in (latencies[:500], latencies[-500:]))
        print(
            f"flash attention {setting:>4}: median {first:5.1f} ms/token over the first 500, {last:5.1f} over the last 500"
        )
        del ctx


if __name__ == "__main__":
    main()
