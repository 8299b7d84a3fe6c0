"""``sinkchat serve``: load the model once, then answer OpenAI clients until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from sinkchat.errors import SinkchatError
from sinkchat.safe_text import inert_line

SERVE_HINT = "pip install 'sinkchat[serve]'"


def _need_http_stack() -> None:
    try:
        import sse_starlette  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise SinkchatError(f"sinkchat serve needs the serve extra ({exc.name} is missing): {SERVE_HINT}") from None


def serve(args: argparse.Namespace) -> int:
    from sinkchat.cli import settings_for_run
    from sinkchat.opening import library_for, plan_open

    _need_http_stack()
    if args.max_conversations < 0 or args.max_queue < 1:
        raise SinkchatError("--max-conversations must be 0 or more and --max-queue at least 1")
    settings = settings_for_run(args)
    library = library_for(settings)
    library.snapshots_in_memory = args.max_conversations
    plan = plan_open(library, settings, model=args.model)

    from sinkchat.chat import Chat
    from sinkchat.serve.app import Limits, ServeConfig
    from sinkchat.serve.pool import ConversationPool
    from sinkchat.serve.server import bind, is_loopback, run, url_of
    from sinkchat.session import Session

    sock = bind(args.host, args.port)  # before the model loads: a busy port costs no waiting
    try:
        print(f"sinkchat: loading {inert_line(plan.model_path.name)} ...", file=sys.stderr)
        chat = Chat.load(plan.model_path, **plan.load_options)
    except BaseException:
        sock.close()
        raise
    session = Session.detached(chat, library)
    pool = ConversationPool(session, max_queue=args.max_queue, default_system=settings.chat.system_prompt)
    config = ServeConfig(
        model_id=model_id(plan.model_path),
        aliases=frozenset({model_id(plan.model_path), plan.model_path.name, chat.model_name}),
        sampling=settings.sampling,
        limits=Limits(default_max_tokens=settings.chat.max_tokens),
        api_key=args.api_key,
        created=int(plan.model_path.stat().st_mtime),
    )
    url = url_of(sock)
    if chat.chat_problem:
        print(f"sinkchat: note: {inert_line(chat.chat_problem)} (/v1/completions works)", file=sys.stderr)
    if store_problem := library.store.unwritable:
        print(f"sinkchat: note: conversations are not being saved: {inert_line(store_problem)}", file=sys.stderr)
    if not is_loopback(args.host) and not args.api_key:
        print(
            f"sinkchat: warning: listening on {inert_line(args.host)} without an API key: anyone who can reach "
            "this machine can use the model and read its conversations (give --api-key)",
            file=sys.stderr,
        )
    print(
        f"sinkchat: serving {inert_line(config.model_id)} (n_ctx {chat.n_ctx}, {chat.device}) at {url}/v1 "
        f"- Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    # uvicorn stops gracefully on SIGINT and SIGTERM, then raises the signal again: both end here, after
    # the pool closed (the last snapshot written), instead of killing the process on the way out.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        run(pool, config, sock)
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("sinkchat: stopped; conversations are saved", file=sys.stderr)
    return 0


class _Stopped(Exception):
    """SIGTERM, raised again by uvicorn once it has stopped."""


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


def model_id(path: Path) -> str:
    """The name clients use for the model: its file name without ``.gguf``."""
    return path.name[: -len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
