"""The ``sinkchat`` command line.

User errors (bad path, damaged GGUF, impossible settings) end in one clear line on stderr
and exit status 2, never in a traceback.  Output cut short by its reader (``| head``) ends
quietly with status 141, as for other commands killed by SIGPIPE.  The full-screen UI is
found through the ``sinkchat.frontends`` entry point, so this core module never imports it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

from sinkchat import __version__
from sinkchat.errors import SinkchatError
from sinkchat.safe_text import inert, inert_line

EXIT_USAGE = 2
EXIT_PIPE = 141
"""128 + SIGPIPE: what a shell reports for a command whose reader went away (``| head``)."""
FRONTENDS = "sinkchat.frontends"


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 (no limit) or more")
    return number


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The model, cache and sampling options ``run`` and ``serve`` share."""
    parser.add_argument("-s", "--system", metavar="TEXT", help="system prompt")
    parser.add_argument(
        "--chat-template",
        metavar="NAME|FILE",
        help="chat template to use instead of the model's own (a Jinja file, or a name: sinkchat models templates)",
    )
    parser.add_argument("-c", "--n-ctx", type=int, metavar="N", help="KV-cache size in tokens (default 4096)")
    parser.add_argument("--sink-tokens", type=int, metavar="N", help="attention-sink tokens kept (default 4)")
    parser.add_argument(
        "--no-keep-system-prompt",
        dest="keep_system_prompt",
        action="store_const",
        const=False,
        help="pin only the sink tokens; the system prompt is evicted like an old turn",
    )
    parser.add_argument("--discard", type=int, metavar="N", help="tokens a shift aims to free (default: window/4)")
    parser.add_argument("--max-tokens", type=_count, metavar="N", help="reply limit, 0 = none (default 1024)")
    parser.add_argument(
        "-ngl",
        "--n-gpu-layers",
        type=int,
        metavar="N",
        help="layers on the GPU: -1 all, 0 none (default: all on a GPU build)",
    )
    parser.add_argument("-t", "--threads", type=int, metavar="N", help="CPU threads (default: physical cores)")
    parser.add_argument("--flash-attn", choices=["auto", "on", "off"])
    parser.add_argument("--cache-type-k", metavar="TYPE", help="K cache type: f16 (default), q8_0, ...")
    parser.add_argument("--cache-type-v", metavar="TYPE", help="V cache type: f16 (default), q8_0, ...")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--min-p", type=float)
    parser.add_argument("--repeat-penalty", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("-v", "--verbose", action="store_true", help="show llama.cpp's log on stderr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sinkchat",
        description="Chat forever with a local GGUF model in fixed memory (attention-sink KV cache). "
        "With no command, opens the chat (sinkchat run).",
    )
    parser.add_argument("--version", action="version", version=f"sinkchat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="chat in the terminal",
        description="Chat with a local GGUF model. Options override the settings file (sinkchat config path).",
    )
    run.add_argument("--plain", action="store_true", help="line mode: for ssh, pipes and screen readers")
    run.add_argument(
        "-m",
        "--model",
        metavar="PATH",
        type=Path,
        help="GGUF model file (default: settings, else the embedded SmolLM2)",
    )
    run.add_argument(
        "-r",
        "--resume",
        nargs="?",
        const="last",
        metavar="ID",
        help="continue a saved session: its id, a unique prefix of it, or last (the default)",
    )
    run.add_argument(
        "--no-save",
        dest="save",
        action="store_false",
        help="do not save this chat: nothing is written to the saved sessions",
    )
    add_model_options(run)

    serve = sub.add_parser(
        "serve",
        help="an OpenAI-compatible API on this machine (needs the serve extra)",
        description="Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, "
        "/v1/models, /health). Conversations are recognised from the messages a client sends, so only new "
        "messages are read, and they are saved as sessions (sinkchat sessions list; sinkchat run --resume ID).",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    serve.add_argument("-p", "--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        default=os.environ.get("SINKCHAT_API_KEY") or None,
        help="require 'Authorization: Bearer KEY' on every request (default: $SINKCHAT_API_KEY, else none)",
    )
    serve.add_argument(
        "--max-conversations",
        type=int,
        default=4,
        metavar="N",
        help="conversations whose caches stay in memory; others come back from their snapshot files (default 4)",
    )
    serve.add_argument(
        "--max-queue", type=int, default=32, metavar="N", help="requests that may wait for the model (default 32)"
    )
    serve.add_argument(
        "-m",
        "--model",
        metavar="PATH",
        type=Path,
        help="GGUF model file (default: settings, else the embedded SmolLM2)",
    )
    add_model_options(serve)

    sessions = sub.add_parser(
        "sessions",
        help="saved chats: list, show, rename, rm, export, import",
        description="Saved chats. IDs may be shortened to any unique prefix.",
    )
    ssub = sessions.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = ssub.add_parser("list", help="sessions, most recent first")
    listing.add_argument("-s", "--search", metavar="TEXT", help="only sessions whose title or messages contain TEXT")
    listing.add_argument("-n", "--limit", type=int, metavar="N", help="at most N sessions")
    show = ssub.add_parser("show", help="print a session's messages")
    show.add_argument("id")
    rename = ssub.add_parser("rename", help="give a session a title")
    rename.add_argument("id")
    rename.add_argument("title", nargs="+")
    rm = ssub.add_parser("rm", help="delete sessions (asks first)")
    rm.add_argument("ids", nargs="+", metavar="id")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")
    export = ssub.add_parser("export", help="write a session as Markdown or JSON")
    export.add_argument("id")
    export.add_argument("--format", choices=["md", "json"], default="md")
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="file to write (default: stdout)")
    imp = ssub.add_parser("import", help="add a session from a JSON export (once: a second import says where it is)")
    imp.add_argument("file", type=Path)
    imp.add_argument("--copy", action="store_true", help="import it even if the same chat is already here")

    from sinkchat import models_cli

    models_cli.add_parser(sub)

    from sinkchat import bench_cli

    bench_cli.add_parser(sub)

    from sinkchat import sinks_cli

    sinks_cli.add_parser(sub)

    config = sub.add_parser("config", help="the settings file", description="Show or create the settings file.")
    config.add_argument(
        "action",
        choices=["path", "show", "init"],
        help="path: where it is · show: effective settings · init: write a commented file",
    )
    return parser


def _with(section: Any, **changes: Any) -> Any:
    """A copy of a settings section with the given (non-None) values, validated again."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return type(section).model_validate({**section.model_dump(), **changes}) if changes else section


def settings_for_run(args: argparse.Namespace):  # -> Settings
    """The settings file, overridden by the command line."""
    from sinkchat.settings import load_settings

    s = load_settings()
    chat = _with(s.chat, system_prompt=args.system)
    if args.max_tokens is not None:
        chat = chat.model_copy(update={"max_tokens": args.max_tokens or None})
    return s.model_copy(
        update={
            "model": _with(
                s.model,
                n_gpu_layers=args.n_gpu_layers,
                threads=args.threads,
                flash_attn=args.flash_attn,
                type_k=args.cache_type_k,
                type_v=args.cache_type_v,
                chat_template=args.chat_template,
            ),
            "cache": _with(
                s.cache,
                n_ctx=args.n_ctx,
                sink_tokens=args.sink_tokens,
                keep_system_prompt=args.keep_system_prompt,
                discard=args.discard,
            ),
            "chat": chat,
            "sampling": _with(
                s.sampling,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                min_p=args.min_p,
                repeat_penalty=args.repeat_penalty,
                seed=args.seed,
            ),
        }
    )


def _frontend(name: str):
    for entry in entry_points(group=FRONTENDS):
        if entry.name == name:
            return entry.load()
    return None


SAMPLING_ARGS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")


def given_settings(args: argparse.Namespace) -> frozenset[str]:
    """Settings set on this command line: they override what a resumed session remembers."""
    given = set()
    if args.n_ctx is not None:
        given.add("n_ctx")
    if args.system is not None:
        given.add("system_prompt")
    if getattr(args, "chat_template", None) is not None:
        given.add("chat_template")
    if any(getattr(args, name) is not None for name in SAMPLING_ARGS):
        given.add("sampling")
    if getattr(args, "max_tokens", None) is not None:
        given.add("max_tokens")
    return frozenset(given)


def _run(args: argparse.Namespace) -> int:
    from sinkchat.opening import library_for, plan_open

    settings = settings_for_run(args)
    given = given_settings(args)
    library = library_for(settings)
    _report_store(library.store)
    plan = plan_open(library, settings, model=args.model, resume=args.resume, given=given, save=args.save)
    if not args.plain and sys.stdin.isatty() and sys.stdout.isatty():
        tui = _frontend("tui")
        if tui is not None:
            return int(tui(settings, args.model, library=library, plan=plan, given=given) or 0)
        print("sinkchat: the full-screen UI is not installed; chatting in line mode", file=sys.stderr)

    from sinkchat.chat import Chat
    from sinkchat.opening import open_session
    from sinkchat.plain import run_plain

    if hasattr(sys.stdin, "reconfigure"):  # bytes that are not UTF-8 become U+FFFD, never a traceback
        sys.stdin.reconfigure(errors="replace")
    if sys.stdin.isatty():
        print(f"loading {inert_line(plan.model_path.name)} ...", file=sys.stderr)
    chat = Chat.load(plan.model_path, **plan.load_options)
    try:
        session = open_session(chat, library, plan, given)
    except BaseException:
        chat.close()
        raise
    with session:
        notice = getattr(chat.model, "gpu_notice", None)
        if notice and not (notice in chat.notes and sys.stdin.isatty()):  # line mode on a terminal shows notes
            print(f"sinkchat: {inert(notice)}", file=sys.stderr)
        limit = settings.chat.max_tokens if session.max_tokens is None else session.max_tokens or None
        return run_plain(session, max_tokens=limit)


def _sessions(args: argparse.Namespace) -> int:
    from sinkchat.opening import library_for
    from sinkchat.settings import load_settings
    from sinkchat.store import StoreError

    library = library_for(load_settings())
    _report_store(library.store)
    store = library.store
    if args.action == "list":
        rows = store.list(search=args.search, limit=args.limit)
        if not rows:
            print(
                "no sessions" + (f" matching {inert_line(repr(args.search))}" if args.search else ""), file=sys.stderr
            )
        for info in rows:
            when = info.updated_at.astimezone().strftime("%Y-%m-%d %H:%M")
            flag = "*" if library.is_open(info.id) else " "
            title = inert_line(info.title or "(untitled)")
            if info.settings.origin == "api":
                title = f"[api] {title}"
            model = inert_line(info.model_name, 28)
            print(f"{info.short_id}{flag} {when}  {info.n_messages:>4} msgs  {model:<28}  {title}")
        damaged = [info.short_id for info in rows if info.damaged_text]
        if damaged:
            print(
                f"sinkchat: session(s) {', '.join(damaged)} hold bytes that are not UTF-8 in their title or "
                "settings; shown as \ufffd",
                file=sys.stderr,
            )
    elif args.action == "show":
        sid = store.resolve(args.id)
        print(inert(library.export(sid, "md")), end="")
    elif args.action == "rename":
        sid = store.resolve(args.id)
        store.rename(sid, " ".join(args.title))
        print(f"renamed {sid[:8]}: {inert_line(store.get(sid).title)}")
    elif args.action == "rm":
        ids = list(dict.fromkeys(store.resolve(ref) for ref in args.ids))
        if store.unwritable:  # say so before asking a question whose answer cannot be carried out
            raise StoreError(f"cannot delete session {ids[0][:8]}: {store.unwritable}")
        titles = ", ".join(f"{sid[:8]} {inert_line(store.get(sid).title or '(untitled)', 40)}" for sid in ids)
        what = f"{len(ids)} sessions ({titles})" if len(ids) > 1 else f"session {titles}"
        if not confirm(f"delete {what}?", yes=args.yes):
            print("kept", file=sys.stderr)
            return 1
        for sid in ids:
            title = store.get(sid).title
            library.delete(sid)
            print(f"deleted {sid[:8]} {inert_line(title)}")
    elif args.action == "export":
        sid = store.resolve(args.id)
        text = library.export(sid, args.format)
        if args.output is None:
            sys.stdout.write(text if args.format == "json" else inert(text))
        else:
            _write_file(args.output, text)
            print(f"wrote {inert_line(str(args.output))}", file=sys.stderr)
    else:
        from sinkchat.export import already_here, from_json

        try:
            data = args.file.read_bytes()
        except OSError as exc:
            raise SinkchatError(f"cannot read {args.file}: {exc.strerror or exc}") from exc
        twin = None if args.copy else already_here(store, from_json(data))
        if twin is not None:
            print(
                f"already imported as {twin.short_id}: {inert_line(twin.title or '(untitled)')} "
                "(--copy imports it again)"
            )
            return 0
        info = library.import_json(data)
        print(f"imported {info.short_id}: {inert_line(info.title)} ({info.n_messages} messages)")
    return 0


def confirm(question: str, *, yes: bool, stdin: TextIO | None = None, err: TextIO | None = None) -> bool:
    """True to go ahead with a deletion: ``-y`` was given, or the user answered y on the terminal.

    The question goes to stderr (stdout may be a pipe).  Without a terminal to ask on and
    without ``-y``, it refuses in one line instead of deleting unasked.
    """
    if yes:
        return True
    stdin, err = stdin or sys.stdin, err or sys.stderr
    if not stdin.isatty():
        raise SinkchatError("there is no terminal to ask on: pass -y to delete without a question")
    err.write(f"{question} [y/N] ")
    err.flush()
    answer = stdin.readline()
    if not answer.endswith("\n"):  # Ctrl-D: end the prompt's line
        err.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _report_store(store) -> None:  # noqa: ANN001 (a SessionStore; imported lazily)
    """Damage found on opening, once, on stderr (the UIs show it on their own)."""
    if store.recovery:
        print(f"sinkchat: {inert(store.recovery)}", file=sys.stderr)


def _write_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SinkchatError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _config(args: argparse.Namespace) -> int:
    from sinkchat.settings import config_path, load_settings, write_template

    if args.action == "path":
        print(config_path())
    elif args.action == "init":
        print(f"wrote {write_template()}")
    else:
        import json

        print(json.dumps(load_settings().model_dump(mode="json"), indent=2))
    return 0


def _user_error_types() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from models.errors import ModelError

    return (ModelError, SinkchatError, ValidationError)


def _describe(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        from sinkchat.settings import describe_validation

        return describe_validation(exc)
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a reader that stops reading (``| head``) ends it quietly with status 141."""
    try:
        try:
            return _main(argv)
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()  # a closed pipe shows up here, not in a message at interpreter exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_PIPE


def _stdout_to_devnull() -> None:
    """What is still buffered for a closed pipe goes nowhere, so that Python's exit does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no file descriptor behind stdout (a test's StringIO)
        pass


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `sinkchat` opens the chat, as `sinkchat run` does
        args = parser.parse_args(["run"])
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not verbose:  # llama.cpp's complaints reach the user inside sinkchat's own error messages
        logging.getLogger("llama.cpp").setLevel(logging.CRITICAL + 1)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "serve":
            from sinkchat.serve.command import serve

            return serve(args)
        if args.command == "models":
            from sinkchat import models_cli

            return models_cli.run(args)
        if args.command == "bench":
            from sinkchat import bench_cli

            return bench_cli.run(args)
        if args.command == "sinks":
            from sinkchat import sinks_cli

            return sinks_cli.run(args)
        return _sessions(args) if args.command == "sessions" else _config(args)
    except KeyboardInterrupt:
        return 130
    except _user_error_types() as exc:
        print(f"sinkchat: error: {inert(_describe(exc))}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
