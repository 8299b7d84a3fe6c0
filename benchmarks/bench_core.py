"""Benchmark the core, side by side in one run (ratios, not absolute times: machines are noisy).

1. A context shift (seq_rm + seq_add + the next decode step) against re-prefilling the same
   kept window and decoding that step, for several n_ctx.
2. Decode speed of sinkchat's loop against llama-cpp-python's ``Llama.create_completion``
   on the same model, threads and n_ctx, interleaved A/B.
3. The throughput cost of shifting: sinkchat's loop with a cache far smaller than the
   output against one that never fills.

    python benchmarks/bench_core.py [--model PATH] [--threads N] [--tokens N] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from models.llama_context import LlamaContext
from models.llama_model import LlamaModel
from models.options import LoadOptions, default_threads
from sinkchat import Chat
from sinkchat.chat import resolve_model_path
from sinkchat.engine import SinkEngine
from sinkchat.layout import Eviction
from sinkchat.policy import SinkPolicy

PROMPT = "Once upon a time, in a kingdom by the northern sea, there lived an old clockmaker who"


def filler_tokens(model: LlamaModel, n: int) -> list[int]:
    text = " ".join(f"Paragraph {i}: the clockmaker repaired the town's clocks and told stories." for i in range(n))
    return model.tokenize(text)[:n]


def bench_shift(model: LlamaModel, n_ctx: int, threads: int, repeats: int) -> dict[str, float]:
    """Median ms of: one plain decode step, shift + step, re-prefill of the kept window + step."""
    ctx = LlamaContext(model, LoadOptions(n_ctx=n_ctx, n_threads=threads))
    sinks, discard = 4, n_ctx // 4
    tokens = filler_tokens(model, n_ctx + repeats * 3)
    plain, shift, reprefill = [], [], []
    try:
        for r in range(repeats):
            ctx.clear()
            engine = SinkEngine(ctx, SinkPolicy(discard=discard), capacity=n_ctx, pin_target=sinks)
            engine.feed(tokens[: n_ctx - 2], "raw", 1)
            nxt = n_ctx - 2 + r

            t = time.perf_counter()
            engine.feed([tokens[nxt]], "raw", 1)  # fills the cache: no shift yet
            plain.append(time.perf_counter() - t)

            t = time.perf_counter()
            engine.evict(Eviction(start=sinks, end=sinks + discard, aligned=False))
            engine.feed([tokens[nxt + 1]], "raw", 1)  # pays for the K re-rotation
            shift.append(time.perf_counter() - t)

            kept = list(engine.tokens)
            t = time.perf_counter()
            ctx.clear()
            ctx.decode(kept, 0, "none")
            ctx.decode([tokens[nxt + 2]], len(kept))
            reprefill.append(time.perf_counter() - t)
    finally:
        ctx.close()
    return {
        "plain_ms": statistics.median(plain) * 1e3,
        "shift_ms": statistics.median(shift) * 1e3,
        "reprefill_ms": statistics.median(reprefill) * 1e3,
    }


def bench_decode(path: Path, threads: int, n_tokens: int, repeats: int) -> dict[str, float]:
    """Tokens/s of sinkchat's loop vs Llama.create_completion, greedy, same prompt, interleaved."""
    from llama_cpp import Llama

    n_ctx = 2048
    chat = Chat.load(path, n_ctx=n_ctx, n_threads=threads, sampling={"temperature": 0.0, "repeat_penalty": 1.0})
    llm = Llama(str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    ours, theirs = [], []
    try:
        for _ in range(repeats):
            chat.reset()
            t = time.perf_counter()
            n = sum(1 for _ in chat.generate(PROMPT, max_tokens=n_tokens, stop_at_eos=False))
            assert chat.last_reply is not None and chat.last_reply.n_tokens == n_tokens, n
            ours.append(n_tokens / (time.perf_counter() - t))

            llm.reset()
            t = time.perf_counter()
            out = llm.create_completion(
                PROMPT, max_tokens=n_tokens, temperature=0.0, repeat_penalty=1.0, logit_bias={llm.token_eos(): -1e9}
            )
            elapsed = time.perf_counter() - t
            theirs.append(out["usage"]["completion_tokens"] / elapsed)
    finally:
        chat.close()
        llm.close()
    return {"sinkchat_tok_s": statistics.median(ours), "create_completion_tok_s": statistics.median(theirs)}


def bench_shifting_throughput(path: Path, threads: int, n_tokens: int) -> dict[str, float]:
    """Tokens/s when the output is 4x the cache (constant shifting) vs when it always fits."""
    result = {}
    for label, n_ctx in (("fits", n_tokens + 256), ("shifting", max(128, n_tokens // 4))):
        with Chat.load(path, n_ctx=n_ctx, n_threads=threads, sampling={"temperature": 0.7, "seed": 1}) as chat:
            t = time.perf_counter()
            for _ in chat.generate(PROMPT, max_tokens=n_tokens, stop_at_eos=False):
                pass
            result[f"{label}_tok_s"] = n_tokens / (time.perf_counter() - t)
            result[f"{label}_shifts"] = chat.stats.shifts
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--tokens", type=int, default=256, help="tokens per decode run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[512, 1024, 2048])
    args = parser.parse_args()
    path = resolve_model_path(args.model)
    print(f"model {path.name} · {args.threads} threads · median of {args.repeats}\n")

    model = LlamaModel(path)
    print("1. context shift vs re-prefilling the kept window (each + one decode step)")
    print(f"{'n_ctx':>6} {'step ms':>9} {'shift+step ms':>14} {'re-prefill+step ms':>19} {'re-prefill / shift':>19}")
    for n_ctx in args.n_ctx:
        r = bench_shift(model, n_ctx, args.threads, args.repeats)
        ratio = r["reprefill_ms"] / r["shift_ms"]
        print(f"{n_ctx:>6} {r['plain_ms']:>9.2f} {r['shift_ms']:>14.2f} {r['reprefill_ms']:>19.1f} {ratio:>18.1f}x")
    model.close()

    print(f"\n2. decode speed, {args.tokens} tokens greedy, n_ctx 2048")
    d = bench_decode(path, args.threads, args.tokens, args.repeats)
    ratio = d["sinkchat_tok_s"] / d["create_completion_tok_s"]
    print(
        f"sinkchat loop {d['sinkchat_tok_s']:.1f} tok/s · create_completion {d['create_completion_tok_s']:.1f} tok/s · ratio {ratio:.2f}"
    )

    n = args.tokens * 4
    print(f"\n3. throughput while shifting, {n} tokens")
    s = bench_shifting_throughput(path, args.threads, n)
    print(
        f"cache fits: {s['fits_tok_s']:.1f} tok/s ({s['fits_shifts']} shifts) · "
        f"cache = output/4: {s['shifting_tok_s']:.1f} tok/s ({s['shifting_shifts']} shifts) · "
        f"ratio {s['shifting_tok_s'] / s['fits_tok_s']:.2f}"
    )


if __name__ == "__main__":
    main()
