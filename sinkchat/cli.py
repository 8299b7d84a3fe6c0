"""The ``sinkchat`` command line.

User errors (bad path, damaged GGUF, impossible settings) end in one clear line on stderr
and exit status 2, never in a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sinkchat import __version__

EXIT_USAGE = 2


def _positive_or_none(value: str) -> int | None:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return number or None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinkchat",
        description="Chat forever with a local GGUF model in fixed memory (attention-sink KV cache).",
    )
    parser.add_argument("--version", action="version", version=f"sinkchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="chat in the terminal", description="Chat with a local GGUF model.")
    run.add_argument("--plain", action="store_true", help="line mode: for ssh, pipes and screen readers")
    run.add_argument("-m", "--model", metavar="PATH", help="GGUF model file (default: the embedded SmolLM2)")
    run.add_argument("-s", "--system", metavar="TEXT", help="system prompt")
    run.add_argument(
        "-c", "--n-ctx", type=int, default=4096, metavar="N", help="KV-cache size in tokens (default 4096)"
    )
    run.add_argument("--sink-tokens", type=int, default=4, metavar="N", help="attention-sink tokens kept (default 4)")
    run.add_argument(
        "--no-keep-system-prompt",
        dest="keep_system_prompt",
        action="store_false",
        help="pin only the sink tokens, let the system prompt be evicted like any old turn",
    )
    run.add_argument("--discard", type=int, metavar="N", help="tokens a shift aims to free (default: window/4)")
    run.add_argument(
        "--max-tokens", type=_positive_or_none, default=1024, metavar="N", help="reply limit, 0 = none (default 1024)"
    )
    run.add_argument(
        "-ngl",
        "--n-gpu-layers",
        type=int,
        metavar="N",
        help="layers on the GPU: -1 all, 0 none (default: all on a GPU build)",
    )
    run.add_argument("-t", "--threads", type=int, metavar="N", help="CPU threads (default: physical cores)")
    run.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    run.add_argument("--cache-type-k", default="f16", metavar="TYPE", help="K cache type: f16, q8_0, ...")
    run.add_argument("--cache-type-v", default="f16", metavar="TYPE", help="V cache type: f16, q8_0, ...")
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--top-k", type=int, default=40)
    run.add_argument("--top-p", type=float, default=0.95)
    run.add_argument("--min-p", type=float, default=0.05)
    run.add_argument("--repeat-penalty", type=float, default=1.1)
    run.add_argument("--seed", type=int)
    run.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log on stderr")
    return parser


def _load_chat(args: argparse.Namespace):  # -> Chat, imported lazily so --help stays instant
    from sinkchat.chat import Chat

    llama_options = {
        "n_gpu_layers": args.n_gpu_layers,
        "n_threads": args.threads,
        "flash_attn": args.flash_attn,
        "type_k": args.cache_type_k,
        "type_v": args.cache_type_v,
    }
    sampling = {
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "seed": args.seed,
    }
    return Chat.load(
        args.model,
        n_ctx=args.n_ctx,
        sink_tokens=args.sink_tokens,
        system_prompt=args.system,
        keep_system_prompt=args.keep_system_prompt,
        discard=args.discard,
        sampling=sampling,
        **{k: v for k, v in llama_options.items() if v is not None},
    )


def _run(args: argparse.Namespace) -> int:
    from sinkchat.plain import run_plain

    if not args.plain and sys.stdin.isatty():
        print("sinkchat: the full-screen UI is not built yet; chatting in line mode", file=sys.stderr)
    if sys.stdin.isatty():
        print(f"loading {args.model or 'the embedded SmolLM2-135M-Instruct'} ...", file=sys.stderr)
    with _load_chat(args) as chat:
        return run_plain(chat, max_tokens=args.max_tokens)


def _user_error_types() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from models.errors import ModelError
    from sinkchat.errors import SinkchatError

    return (ModelError, SinkchatError, ValidationError)


def _describe(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not verbose:  # llama.cpp's complaints reach the user inside sinkchat's own error messages
        logging.getLogger("llama.cpp").setLevel(logging.CRITICAL + 1)
    try:
        if args.command == "run":
            return _run(args)
    except KeyboardInterrupt:
        return 130
    except _user_error_types() as exc:
        print(f"sinkchat: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
