"""Resume a long session from its KV snapshot against rebuilding its cache, side by side in one run.

A session whose saved history is many times ``n_ctx`` long is resumed twice per round:
from its snapshot, and with the snapshot removed (the cache rebuilt from the newest
messages that fit).  Each time the next reply is started, and the time from "resume"
to its first token is measured.  The model is loaded once per round, outside the timing.

    python benchmarks/bench_resume.py [--model PATH] [--n-ctx N ...] [--history X] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from models.options import default_threads
from sinkchat import Chat
from sinkchat.bench.report import spread
from sinkchat.chat import resolve_model_path
from sinkchat.session import Session, SessionLibrary


def fill_history(library: SessionLibrary, chat: Chat, n_tokens: int) -> str:
    """A saved session of about ``n_tokens`` tokens of varied text (written to the store, not generated)."""
    info = library.store.create(model_path=str(chat.model.path))
    total, i = 0, 0
    while total < n_tokens:
        question = f"Question {i}: what happened in chapter {i} of the harbour chronicle, and why did it matter?"
        answer = " ".join(
            f"In chapter {i}, part {j}, the harbour master counted {i * 7 + j} ships and wrote about the tides."
            for j in range(6)
        )
        _, reply = library.store.begin_exchange(info.id, question)
        library.store.finish(reply, answer, "eos")
        total += len(chat.model.tokenize(question + answer)) + 10
        i += 1
    return info.id


def time_to_first_token(chat: Chat, library: SessionLibrary, sid: str) -> tuple[float, float, Session]:
    """(seconds to resume, seconds from resume to the next reply's first piece)."""
    started = time.perf_counter()
    session = Session.resume(chat, library, sid)
    resumed = time.perf_counter() - started
    stream = session.send("And what happened next?", max_tokens=8)
    next(stream)
    first = time.perf_counter() - started
    for _ in stream:
        pass
    return resumed, first, session


def _spread(seconds: list[float]) -> str:
    """min / median / max in ms: one round can land on a load spike of this shared machine."""
    return " / ".join(f"{v * 1000:.0f}" for v in spread(seconds) if v is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file (default: the embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=default_threads())
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--history", type=float, default=10, help="history length in multiples of n_ctx")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    path = resolve_model_path(args.model)

    print(f"model {path.name} · {args.threads} threads · history {args.history:g}x n_ctx · {args.repeats} rounds")
    print("times in ms: resume is the median; first token (from resume) is min / median / max over the rounds")
    print(f"{'n_ctx':>6} {'history':>8} {'snapshot':>9} {'resume':>7} {'first token':>17} {'rebuild':>8} "
          f"{'resume':>7} {'first token':>20} {'ratio':>6}")  # fmt: skip
    for n_ctx in args.n_ctx:
        with tempfile.TemporaryDirectory() as folder:
            library = SessionLibrary(Path(folder))
            chat = Chat.load(path, n_ctx=n_ctx, n_threads=args.threads, sampling={"temperature": 0, "seed": 1})
            sid = fill_history(library, chat, int(args.history * n_ctx))
            n_history = sum(len(chat.model.tokenize(m.content)) for m in library.store.messages(sid))
            # The first resume rebuilds (no snapshot yet) and leaves a snapshot behind.
            _, _, session = time_to_first_token(chat, library, sid)
            session.close(close_chat=False)
            snap_size = library.snapshot_path(sid).stat().st_size
            fast, slow = [], []
            for _ in range(args.repeats):  # interleaved A/B
                r, f, session = time_to_first_token(chat, library, sid)
                assert session.resume_tokens < 64, session.note  # only the last exchange is read
                session.close(close_chat=False)
                fast.append((r, f))
                library.snapshot_path(sid).unlink()
                r, f, session = time_to_first_token(chat, library, sid)
                assert session.note and "rebuilt" in session.note
                session.close(close_chat=False)
                slow.append((r, f))
            fr = statistics.median(r for r, _ in fast) * 1000
            sr = statistics.median(r for r, _ in slow) * 1000
            ff, sf = _spread([f for _, f in fast]), _spread([f for _, f in slow])
            print(
                f"{n_ctx:>6} {n_history:>8} {snap_size / 2**20:>7.1f}MB {fr:>7.0f} {ff:>17} {'':>8} "
                f"{sr:>7.0f} {sf:>20} {statistics.median(f for _, f in slow) / statistics.median(f for _, f in fast):>5.0f}x"
            )
            chat.close()
            library.close()


if __name__ == "__main__":
    main()
