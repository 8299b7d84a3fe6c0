"""``sinkchat models``: search the Hub, see which file fits, pull it, list and remove local models."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from models.units import human_bytes as _size
from sinkchat.errors import SinkchatError
from sinkchat.safe_text import inert_line

SORTS = {"downloads": "downloads", "likes": "likes", "recent": "last_modified", "trending": "trending_score"}
STOP_SIGNALS = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
"""Signals that end a pull the way Ctrl-C does: with its partial files removed."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser(
        "models",
        help="find, pull, list and remove GGUF models",
        description="GGUF models: the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN, HF_HUB_OFFLINE apply) and this machine.",
    )
    msub = models.add_subparsers(dest="action", metavar="ACTION", required=True)
    search = msub.add_parser("search", help="search the Hub for GGUF repositories")
    search.add_argument("query", nargs="?", default="")
    search.add_argument("--sort", choices=list(SORTS), default="downloads")
    search.add_argument("-n", "--limit", type=int, default=20)
    files = msub.add_parser("files", help="a repository's GGUF files, with size and fit for this machine")
    files.add_argument("repo")
    files.add_argument("-c", "--n-ctx", type=int, default=4096, help="cache size to size the KV cache for")
    pull = msub.add_parser("pull", help="download REPO[:QUANT] (default: the best fit) into the HF cache")
    pull.add_argument("ref", metavar="REPO[:QUANT]")
    pull.add_argument("-c", "--n-ctx", type=int, default=4096)
    msub.add_parser("list", help="GGUF models on this machine (base = no chat template)")
    msub.add_parser("templates", help="chat templates shipped for --chat-template NAME, with their sources")
    rm = msub.add_parser("rm", help="delete a downloaded model")
    rm.add_argument("name", help="model name (as listed) or path")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if not os.environ.get("HF_HUB_VERBOSITY"):  # each failure ends in one sentence of ours: no retry chatter
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    action = args.action
    if action == "search":
        return _search(args, out, err)
    if action == "files":
        return _files(args, out)
    if action == "pull":
        return _pull(args, out, err)
    if action == "list":
        return _list(out, err)
    if action == "templates":
        return _templates(out)
    return _rm(args, out, err)


def _search(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from models.hub import HubClient

    results = HubClient().search(args.query, sort=SORTS[args.sort], limit=args.limit)  # type: ignore[arg-type]
    if not results:
        err.write(f"no GGUF repositories match {args.query!r}\n")
    for r in results:
        when = r.last_modified.strftime("%Y-%m-%d") if r.last_modified else ""
        gated = " gated" if r.gated else ""
        out.write(f"{inert_line(r.repo_id):<60} {r.downloads or 0:>10,} ↓ {r.likes or 0:>6,} ♥  {when}{gated}\n")
    return 0


NOT_CHAT = {"mmproj": "vision projector, not a chat model", "imatrix": "importance matrix, not a chat model"}
"""How the GGUF files that are not models are marked where they are listed, set apart."""


def _rows(repo: str, n_ctx: int, found=None):  # noqa: ANN001,ANN202
    """The model files of ``repo`` (``found``: choices already at hand), their needs, fits and the best fit."""
    from models.fit import detect_hardware, estimate, fit, recommend
    from models.hub import HubClient

    choices = [c for c in (HubClient().files(repo) if found is None else found) if c.kind == "model"]
    if not choices:
        raise SinkchatError(f"{repo} has no GGUF model files")
    hardware = detect_hardware()
    needs = [estimate(c.size, n_ctx, quant=c.quant).total for c in choices]
    fits = [fit(n, hardware) for n in needs]
    best = recommend([c.quant for c in choices], [c.size for c in choices], fits)
    return choices, needs, fits, best, hardware


def _files(args: argparse.Namespace, out: TextIO) -> int:
    from models.hub import HubClient

    everything = HubClient().files(args.repo)
    choices, needs, fits, best, hardware = _rows(args.repo, args.n_ctx, everything)
    out.write(f"budget: {_size(hardware.budget)} ({hardware.where}) · n_ctx {args.n_ctx}\n")
    for i, (c, need, f) in enumerate(zip(choices, needs, fits, strict=True)):
        mark = "★" if i == best else " "
        parts = f" ({len(c.parts)} parts)" if len(c.parts) > 1 else ""
        out.write(
            f"{mark} {inert_line(c.quant or '?'):<8} {_size(c.size):>9}  needs ~{_size(need):>9}  {f:<8} "
            f"{inert_line(c.name)}{parts}\n"
        )
    for c in everything:
        if c.kind in NOT_CHAT:
            out.write(
                f"  {inert_line(c.quant or '-'):<8} {_size(c.size):>9}  {NOT_CHAT[c.kind]}: {inert_line(c.name)}\n"
            )
    return 0


def _pull(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from models.hub import HubUnreachable
    from models.hub_download import DownloadCancelled, Progress, pull

    repo, _, quant = args.ref.partition(":")
    try:
        choices, _needs, fits, best, _hw = _rows(repo, args.n_ctx)
    except HubUnreachable as unreachable:
        return _pull_cached(repo, quant, args.n_ctx, unreachable, out, err)
    if quant:
        wanted = [c for c in choices if (c.quant or "").upper() == quant.upper()]
        if not wanted:
            have = ", ".join(sorted({c.quant or "?" for c in choices}))
            raise SinkchatError(f"{repo} has no {quant.upper()} file; it has {have}")
        picked = wanted[0]
    else:
        if best is None:
            raise SinkchatError(f"no file of {repo} fits this machine; pick one with REPO:QUANT to try anyway")
        picked = choices[best]
    if fits[choices.index(picked)] == "too big":
        err.write(f"warning: {picked.name} is probably too big for this machine\n")
    cancel = threading.Event()
    shown = {"at": 0.0}

    def show(p: Progress) -> None:
        now = time.monotonic()
        if now - shown["at"] < 0.2 and p.done < p.total:
            return
        shown["at"] = now
        eta = f" · ETA {_duration(p.eta_seconds)}" if p.eta_seconds is not None else ""
        rate = f" · {_size(int(p.bytes_per_second))}/s" if p.bytes_per_second else ""
        err.write(f"\r{picked.name}: {_size(p.done)} / {_size(p.total)} ({p.fraction:.0%}){rate}{eta}   ")
        err.flush()

    err.write(f"pulling {repo} {picked.quant or picked.name} ({_size(picked.size)})\n")
    try:
        with _stopped_by(STOP_SIGNALS):
            path = pull(repo, picked, on_progress=show, cancel=cancel)
    except Stopped as stop:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            err.write(f"\nstopped by {signal.Signals(stop.signum).name}; nothing was kept\n")
        return 128 + stop.signum
    except KeyboardInterrupt:
        cancel.set()
        err.write("\ncancelled; nothing was kept\n")
        return 130
    except DownloadCancelled:
        err.write("\ncancelled; nothing was kept\n")
        return 130
    except Exception:
        if shown["at"]:
            err.write("\n")  # the error goes on a line of its own, not after the progress
        raise
    err.write("\n")
    out.write(f"{path}\n")
    err.write(f"chat with it: sinkchat run --model {path}\n")
    return 0


def _pull_cached(repo: str, quant: str, n_ctx: int, unreachable, out: TextIO, err: TextIO) -> int:  # noqa: ANN001
    """Without the Hub (offline mode, or unreachable): a model of ``repo`` already in the cache is the answer."""
    from models.hub_download import cached_choices

    paths = {c.name: path for c, path in cached_choices(repo)}
    found = [c for c, _ in cached_choices(repo) if not quant or (c.quant or "").upper() == quant.upper()]
    if not found:
        missing = f"{repo}:{quant.upper()} is not in the cache" if quant else f"no model of {repo} is in the cache"
        raise SinkchatError(f"{unreachable}, and {missing}")
    choices, _needs, _fits, best, _hw = _rows(repo, n_ctx, found)
    picked = choices[0 if quant or best is None else best]
    path = paths[picked.name]
    err.write(f"{unreachable.reason}: {picked.name} was downloaded before and is used as it is\n")
    out.write(f"{path}\n")
    err.write(f"chat with it: sinkchat run --model {path}\n")
    return 0


class Stopped(KeyboardInterrupt):
    """A stop signal, raised in the main thread like Ctrl-C so that whatever cleans up after Ctrl-C runs.

    huggingface_hub removes its partial blob on the way out, and :func:`models.hub_download.pull`
    the parts it had finished; the default action of SIGTERM and SIGHUP would leave both on disk.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stopped_by(signums: list[int]) -> Iterator[None]:
    """Raise :class:`Stopped` on the first of ``signums``; later ones are ignored so the cleanup can finish."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        if not stopping:
            stopping.append(signum)
            raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in signums}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _swept(freed: int, err: TextIO) -> None:
    if freed:
        err.write(f"removed {_size(freed)} of unfinished downloads left by stopped pulls\n")


def _library():  # noqa: ANN202
    from models.default_model import default_model_path
    from models.local_models import scan_local_models
    from sinkchat.settings import load_settings

    settings = load_settings()
    return scan_local_models(embedded=default_model_path(), folders=[settings.models_dir()], hub_cache=True)


def _list(out: TextIO, err: TextIO) -> int:
    from models.hub_download import sweep_partials

    _swept(sweep_partials(), err)
    models = _library()
    if not models:
        err.write("no models on this machine yet; find one with: sinkchat models search QUERY\n")
    for m in models:
        where = m.repo_id or m.source
        params = f"{m.parameters / 1e9:.2g}B · " if m.parameters else ""
        base = " · base (no chat template)" if m.has_chat_template is False else ""
        state = m.problem or f"{params}{m.quantization or '?'} · {m.architecture or '?'} · shift {m.shift}{base}"
        out.write(f"{inert_line(m.name):<44} {_size(m.size_bytes):>9}  {inert_line(where):<36} {inert_line(state)}\n")
    return 0


def _templates(out: TextIO) -> int:
    from models.templates import catalog

    for info in catalog().values():
        aliases = f" (also: {', '.join(info.aliases)})" if info.aliases else ""
        out.write(f"{info.name:<20} {info.models}{aliases}\n{'':<20} from {info.source}\n")
    return 0


def _rm(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from models.hub_download import sweep_partials
    from models.local_models import delete_model

    models = _library()
    target = Path(args.name).expanduser()
    matches = [m for m in models if m.name == args.name or m.path == target]
    if not matches:
        raise SinkchatError(f"no local model named {args.name!r} (see: sinkchat models list)")
    if len(matches) > 1:
        raise SinkchatError(f"{args.name!r} names {len(matches)} models; give the path instead")
    model = matches[0]
    from sinkchat.cli import confirm

    question = (
        f"delete {inert_line(model.name)} ({_size(model.size_bytes)}, {inert_line(str(model.repo_id or model.path))})?"
    )
    if not confirm(question, yes=args.yes, err=err):
        err.write("kept\n")
        return 1
    removed = delete_model(model)
    out.write(f"deleted {model.name} ({len(removed)} files)\n")
    if model.repo_id:
        _swept(sweep_partials(repo_id=model.repo_id), err)
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
