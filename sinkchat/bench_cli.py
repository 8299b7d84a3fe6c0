"""``sinkchat bench``: the attention-sink experiments as commands (see :mod:`sinkchat.bench`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sinkchat.bench.streams import STREAM_POLICIES

CHAT_POLICIES = ("dense", "window", "sinks", "half-discard", "truncate")
RECALL_POLICIES = ("sinkchat", "sinks-unpinned", "half-discard", "truncate", "dense")
"""As in :mod:`sinkchat.bench.chat_bench` (not imported here: ``sinkchat --help`` stays fast)."""


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="compare cache policies: perplexity, endless generation, long chats, speed",
        description="Reproduce the attention-sink experiments on a GGUF model. Writes CSV and PNG "
        "(PNG needs the bench extra: pip install 'sinkchat[bench]') into --out.",
    )
    bsub = bench.add_subparsers(dest="bench", metavar="BENCH", required=True)

    def common(p: argparse.ArgumentParser, out: str) -> None:
        p.add_argument("-m", "--model", help="GGUF file (default: the embedded SmolLM2)")
        p.add_argument("-o", "--out", type=Path, default=Path("sinkchat-bench") / out, help="results folder")
        p.add_argument("-t", "--threads", type=positive_int, help="CPU threads (default: physical cores)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    ppl = bsub.add_parser("ppl", help="log-perplexity and memory against input length over a long text")
    common(ppl, "ppl")
    ppl.add_argument("--text", default="shakespeare", help="text file, or 'shakespeare' (the bench extra's plays)")
    ppl.add_argument("-n", "--tokens", type=positive_int, default=20_000, help="tokens of text to read")
    ppl.add_argument("-c", "--n-ctx", type=positive_int, default=256, help="cache size of the evicting policies")
    ppl.add_argument("--sinks", type=int, default=4, help="sink tokens of the sinks policy")
    ppl.add_argument(
        "--sink-sweep", type=int, nargs="+", metavar="N", help="run sinks with each count (e.g. 0 1 2 4 8)"
    )
    ppl.add_argument("--discard", type=positive_int, help="tokens one shift frees (default: the chunk)")
    ppl.add_argument("--chunk", type=positive_int, help="tokens evaluated per step (default: n_ctx/8)")
    ppl.add_argument("--policies", nargs="+", choices=STREAM_POLICIES, default=list(STREAM_POLICIES))
    ppl.add_argument("--recompute-tokens", type=positive_int, help="stop recompute (the slow one) earlier")
    ppl.add_argument("--dense-ctx", type=positive_int, help="dense cache size (default: the training context)")

    endless = bsub.add_parser("endless", help="generate far beyond the cache; when is fluency lost?")
    common(endless, "endless")
    endless.add_argument("-n", "--tokens", type=positive_int, default=10_000, help="tokens to generate per policy")
    endless.add_argument("-c", "--n-ctx", type=positive_int, default=256, help="cache size of the evicting policies")
    endless.add_argument("--sinks", type=int, default=4)
    endless.add_argument("--discard", type=positive_int, help="tokens one shift frees (default: n_ctx/4)")
    endless.add_argument("--policies", nargs="+", choices=STREAM_POLICIES, default=list(STREAM_POLICIES))
    endless.add_argument("--dense-ctx", type=positive_int, help="dense cache size (default: the training context)")
    endless.add_argument("--prompt", help="text to continue (default: the opening of a story)")
    endless.add_argument("--seed", type=int, default=7, help="sampling seed (the same for every policy)")

    chat = bsub.add_parser("chat", help="one long conversation per policy; count failed replies")
    common(chat, "chat")
    chat.add_argument("-c", "--n-ctx", type=positive_int, default=1024)
    chat.add_argument("--sinks", type=int, default=4)
    chat.add_argument("--max-tokens", type=positive_int, default=160, help="reply limit per turn")
    chat.add_argument("--conversations", type=positive_int, help="use only the first N two-turn prompts (84 shipped)")
    chat.add_argument("--prompts", type=Path, help="a JSON file shaped like the shipped prompts")
    chat.add_argument("--policies", nargs="+", choices=CHAT_POLICIES, default=list(CHAT_POLICIES))
    chat.add_argument("--dense-ctx", type=positive_int, help="dense cache size (default: the training context)")
    chat.add_argument("--chat-template", metavar="NAME|FILE", help="a chat template for a model without one")
    chat.add_argument(
        "--transcript",
        choices=[*CHAT_POLICIES, "none"],
        default="truncate",
        help="whose replies every policy reads again, scored against the oracle (default: truncate)",
    )

    speed = bsub.add_parser("speed", help="decode speed vs create_completion; context shift vs re-prefill")
    common(speed, "speed")
    speed.add_argument("-c", "--n-ctx", type=positive_int, nargs="+", default=[512, 1024, 2048, 4096])
    speed.add_argument("-n", "--tokens", type=positive_int, default=256, help="tokens per decode run")
    speed.add_argument("--repeats", type=positive_int, default=5)

    serve = bsub.add_parser(
        "serve",
        help="one long conversation over the OpenAI API: sinkchat serve vs llama-cpp-python's server",
        description="The same scripted conversation through the openai client against sinkchat serve and "
        "python -m llama_cpp.server (needs the serve and bench extras), turns alternating between them. "
        "Reports the time to first token per turn and the turn where each refuses or re-reads the history.",
    )
    common(serve, "serve")
    serve.add_argument("-c", "--n-ctx", type=positive_int, default=1024)
    serve.add_argument("-n", "--turns", type=positive_int, default=60)
    serve.add_argument("--max-tokens", type=positive_int, default=64, help="reply limit per turn")

    recall = bsub.add_parser(
        "recall",
        help="facts planted in a long chat: can each policy still recall them? (teacher-forced probes)",
        description="One fixed transcript with facts in the system prompt, an early turn and a recent turn, "
        "replayed through each policy's cache; at each checkpoint every fact is probed by teacher forcing "
        "against distractors (rank and log-probability margin). Nothing is generated by the probes.",
    )
    common(recall, "recall")
    recall.add_argument("-c", "--n-ctx", type=positive_int, default=512)
    recall.add_argument("-n", "--turns", type=positive_int, default=160)
    recall.add_argument("--every", type=positive_int, default=8, help="turns between checkpoints")
    recall.add_argument("--max-tokens", type=positive_int, default=64, help="reply limit of the transcript")
    recall.add_argument("--policies", nargs="+", choices=RECALL_POLICIES, default=list(RECALL_POLICIES))
    recall.add_argument("--dense-ctx", type=positive_int, help="dense cache size (default: the training context)")
    recall.add_argument(
        "--chat-template", metavar="NAME|FILE", help="a chat template for a model without one (gemma-3, chatml, ...)"
    )
    recall.add_argument(
        "--replies",
        type=Path,
        metavar="CSV",
        help="read the replies of an earlier run (its recall_transcript.csv, e.g. another model's) instead of writing them",
    )


def run(args: argparse.Namespace) -> int:
    handler = {"ppl": _ppl, "endless": _endless, "chat": _chat, "speed": _speed, "serve": _serve, "recall": _recall}[
        args.bench
    ]
    return handler(args)


def threads_option(args: argparse.Namespace) -> dict[str, Any]:
    return {"threads": args.threads} if args.threads else {}


def open_model(args: argparse.Namespace):  # -> LlamaModel
    from models.llama_model import LlamaModel
    from sinkchat.chat import resolve_model_path

    return LlamaModel(resolve_model_path(args.model))


def context_defaults() -> dict[str, Any]:
    """What a bench's contexts run with when it does not choose: flash attention and the SWA cache."""
    import llama_cpp

    from models.options import LoadOptions

    return {
        "flash_attn_used": [LoadOptions().flash_attn],
        "swa_full_used": [bool(llama_cpp.llama_context_default_params().swa_full)],
    }


def finish(out: Path, name: str, files: Mapping[str, Path | None], config: BaseModel, **about: Any) -> int:
    """Save the run's configuration, and what the contexts really used, next to its results."""
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_json

    about = {**context_defaults(), **about}
    files = {**files, "config": write_json(out / f"{name}_config.json", {**about, **config.model_dump()})}
    if not plots.available():
        print(plots.MISSING, file=sys.stderr)
    written = ", ".join(p.name for p in files.values() if p is not None)
    print(f"\nwritten to {out}: {written}")
    return 0


def _print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    from sinkchat.bench.report import table

    print()
    print(table(rows, columns))


def _ppl(args: argparse.Namespace) -> int:
    from sinkchat.bench.corpus import load_text
    from sinkchat.bench.ppl import COLUMNS, PplConfig, run_ppl, summaries, write_results
    from sinkchat.bench.report import output_dir

    config = PplConfig(
        policies=tuple(args.policies),
        n_ctx=args.n_ctx,
        sinks=args.sinks,
        sink_sweep=tuple(args.sink_sweep or ()),
        discard=args.discard,
        chunk=args.chunk,
        max_tokens=args.tokens,
        recompute_tokens=args.recompute_tokens,
        dense_ctx=args.dense_ctx,
        **threads_option(args),
    )
    out = output_dir(args.out)
    text, source = load_text(args.text, min_chars=args.tokens * 6)
    with open_model(args) as model:
        tokens = model.tokenize(text, add_special=model.add_bos)[: args.tokens]
        print(f"{model.name} · {source} · {len(tokens):,} tokens · cache {config.n_ctx} · {config.threads} threads")
        runs = run_ppl(model, tokens, config, progress=not args.quiet)
    _print_table(summaries(runs, config.n_ctx), COLUMNS)
    used = {  # what the runs really used, beside what was asked for
        "chunk_used": sorted({r.chunk for r in runs}),
        "swa_full_used": sorted({r.swa_full for r in runs}),
        "flash_attn_used": sorted({r.flash_attn for r in runs}),
        "fallbacks": {r.label: r.fallbacks for r in runs},
        "recompute_reads_bos": bool(model.add_bos),
    }
    files = write_results(runs, out, config)
    return finish(out, "ppl", files, config, model=model.name, text=source, **used)


def _endless(args: argparse.Namespace) -> int:
    from sinkchat.bench.endless import COLUMNS, EndlessConfig, run_endless, summary, write_results
    from sinkchat.bench.report import output_dir

    base = EndlessConfig()
    config = EndlessConfig(
        policies=tuple(args.policies),
        tokens=args.tokens,
        n_ctx=args.n_ctx,
        sinks=args.sinks,
        discard=args.discard,
        dense_ctx=args.dense_ctx,
        prompt=args.prompt or base.prompt,
        sampling=base.sampling.model_copy(update={"seed": args.seed}),
        **threads_option(args),
    )
    out = output_dir(args.out)
    with open_model(args) as model:
        print(f"{model.name} · {config.tokens:,} tokens per policy · cache {config.n_ctx} · {config.threads} threads")
        runs = run_endless(model, config, progress=not args.quiet)
    _print_table([summary(r) for r in runs], COLUMNS)
    fallbacks = {r.policy: r.fallbacks for r in runs}
    return finish(out, "endless", write_results(runs, out, config), config, model=model.name, fallbacks=fallbacks)


def _chat(args: argparse.Namespace) -> int:
    from sinkchat.bench.chat_bench import (
        COLUMNS,
        ChatBenchConfig,
        cache_size,
        load_prompts,
        run_chat,
        run_paired,
        summary,
        transcript_of,
        write_results,
    )
    from sinkchat.bench.paired import COLUMNS as PAIRED_COLUMNS
    from sinkchat.bench.paired import summary as paired_summary
    from sinkchat.bench.report import output_dir
    from sinkchat.errors import SinkchatError

    config = ChatBenchConfig(
        policies=tuple(args.policies),
        n_ctx=args.n_ctx,
        sinks=args.sinks,
        max_tokens=args.max_tokens,
        conversations=args.conversations,
        dense_ctx=args.dense_ctx,
        chat_template=args.chat_template,
        transcript=None if args.transcript == "none" else args.transcript,
        **threads_option(args),
    )
    if config.transcript is not None and config.transcript not in config.policies:
        raise SinkchatError(f"--transcript {config.transcript} is not among the policies run")
    try:
        prompts = load_prompts(args.prompts)[: config.conversations]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SinkchatError(f"cannot read the prompts {args.prompts}: {exc}") from None
    out = output_dir(args.out)
    with open_model(args) as model:
        n_ctx = {p: cache_size(model, p, config) for p in config.policies}
        print(f"{model.name} · {2 * len(prompts)} turns per policy · cache {config.n_ctx} · {config.threads} threads")
        results = run_chat(model, config, prompts, progress=not args.quiet)
        paired = []
        if config.transcript is not None:
            paired = run_paired(model, config, transcript_of(results, config.transcript), progress=not args.quiet)
    _print_table([summary(p, t, n_ctx[p], paired) for p, t in results.items()], COLUMNS)
    if paired:
        print(f"\n{config.transcript}'s replies read by every policy, scored against the oracle:")
        _print_table(paired_summary(paired), PAIRED_COLUMNS)
    fallbacks = {p: (t[-1].fallbacks if t else 0) for p, t in results.items()}
    files = write_results(results, out, config, n_ctx, paired)
    return finish(out, "chat", files, config, model=model.name, fallbacks=fallbacks)


def _speed(args: argparse.Namespace) -> int:
    from sinkchat.bench.report import output_dir
    from sinkchat.bench.speed import DECODE_COLUMNS, SHIFT_COLUMNS, SpeedConfig, run_speed, write_results

    config = SpeedConfig(
        n_ctx=tuple(args.n_ctx), decode_tokens=args.tokens, repeats=args.repeats, **threads_option(args)
    )
    out = output_dir(args.out)
    with open_model(args) as model:
        print(f"{model.name} · {config.threads} threads · median of {config.repeats}")
        decode, shifts = run_speed(model, config, progress=not args.quiet)
    _print_table([decode], DECODE_COLUMNS)
    _print_table(shifts, SHIFT_COLUMNS)
    return finish(out, "speed", write_results(decode, shifts, out), config, model=model.name)


def _serve(args: argparse.Namespace) -> int:
    from sinkchat.bench.report import output_dir, write_json
    from sinkchat.bench.serve_bench import (
        COLUMNS,
        ServeBenchConfig,
        config_json,
        run_serve_bench,
        summarize,
        write_results,
    )
    from sinkchat.chat import resolve_model_path
    from sinkchat.errors import SinkchatError

    for module, extra in (("uvicorn", "serve"), ("openai", "serve"), ("llama_cpp.server", "bench")):
        try:
            __import__(module)
        except ImportError:
            raise SinkchatError(
                f"bench serve needs {module} (the {extra} extra): pip install 'sinkchat[serve,bench]'"
            ) from None
    config = ServeBenchConfig(turns=args.turns, n_ctx=args.n_ctx, max_tokens=args.max_tokens, **threads_option(args))
    model = resolve_model_path(args.model)
    out = output_dir(args.out)
    print(f"{model.name} · {config.turns} turns · n_ctx {config.n_ctx} · {config.threads} threads · both servers")
    results = run_serve_bench(model, config, progress=not args.quiet)
    _print_table(summarize(results), COLUMNS)
    files = write_results(results, out)
    files["config"] = write_json(out / "serve_config.json", config_json(config, model))
    written = ", ".join(p.name for p in files.values() if p is not None)
    print(f"\nwritten to {out}: {written}")
    return 0


def _recall(args: argparse.Namespace) -> int:
    from sinkchat.bench import paired
    from sinkchat.bench.recall import (
        COLUMNS,
        RecallConfig,
        leaks,
        read_transcript,
        run_recall,
        summary,
        write_results,
        write_transcript,
    )
    from sinkchat.bench.report import output_dir

    config = RecallConfig(
        policies=tuple(args.policies),
        n_ctx=args.n_ctx,
        turns=args.turns,
        every=args.every,
        max_tokens=args.max_tokens,
        dense_ctx=args.dense_ctx,
        chat_template=args.chat_template,
        **threads_option(args),
    )
    out = output_dir(args.out)
    with open_model(args) as model:
        title = f"{model.name} · {config.turns} turns · cache {config.n_ctx}"
        print(f"{title} · probes every {config.every}")
        if args.replies is not None:
            script = read_transcript(args.replies, config)
        else:
            script = write_transcript(model, config, progress=not args.quiet)
        leaked = leaks(script)
        if leaked:
            print(f"warning: {len(leaked)} replies name a planted fact (turns {leaked[:8]}...): the probes of the system "
                  "and early facts then measure the echo, not the cache; see --replies", file=sys.stderr)  # fmt: skip
        rows, quality = run_recall(model, config, script, progress=not args.quiet)
    _print_table(summary(rows), COLUMNS)
    print()
    _print_table(paired.summary(quality), paired.COLUMNS)
    files = write_results(rows, quality, script, out, title=f"fixed replies read by each policy · {title}")
    replies = str(args.replies) if args.replies is not None else "written by truncate"
    return finish(out, "recall", files, config, model=model.name, replies=replies, leaked_turns=leaked)
