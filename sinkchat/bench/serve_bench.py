"""``sinkchat bench serve``: one scripted long conversation through the official OpenAI client, against
``sinkchat serve`` and against llama-cpp-python's own server, side by side in one run.

Both servers run the same model file with the same ``n_ctx`` and threads, as subprocesses
on 127.0.0.1; the turns alternate between them (and which goes first alternates too), so
load on the machine lands on both.  Each client behaves as ordinary chat clients do: it
sends the whole history every turn.  When a server refuses a history that outgrew its
context, the client drops the oldest exchanges until it is accepted (what chat front ends
do); from then on that server reads its window again on every turn.  Per turn, the time to
the first token is measured from the request to the first streamed content.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sinkchat.bench.report import spread
from sinkchat.errors import SinkchatError

SERVERS = ("sinkchat", "llama_cpp.server")
COLUMNS = [
    ("server", "server"),
    ("turns_ok", "turns ok"),
    ("first_failure", "refused at turn"),
    ("first_reread", "re-reads from turn"),
    ("ttft_early_min_ms", "TTFT turns 2-6 min (ms)"),
    ("ttft_early_ms", "median"),
    ("ttft_early_max_ms", "max"),
    ("ttft_late_min_ms", "TTFT last 10 min"),
    ("ttft_late_ms", "median"),
    ("ttft_late_max_ms", "max"),
]
"""Turns alternate between the servers, so load changes land on both; every time has its spread."""


class ServeBenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    turns: int = Field(60, ge=2)
    n_ctx: int = Field(1024, ge=256)
    max_tokens: int = Field(64, ge=1)
    threads: int = Field(default_factory=lambda: max(1, (os.cpu_count() or 2)))
    system: str = "You are a helpful assistant. Answer in a few sentences."
    startup_timeout: float = 300.0


@dataclass
class TurnResult:
    server: str
    turn: int
    ttft_s: float | None
    seconds: float
    prompt_tokens: int | None
    completion_tokens: int | None
    evaluated_tokens: int | None
    """sinkchat's own count of tokens read before the reply; None where the server does not say."""
    sent_exchanges: int
    dropped_exchanges: int
    """Oldest exchanges the client had to leave out for the server to accept the request."""
    status: str
    """ok; trimmed (accepted only without its oldest exchanges); failed (refused even with none)."""
    rereads: bool
    """The server had to read history it had read before (a changed prefix, or sinkchat's rebuild)."""


def questions(n: int) -> list[str]:
    """The shipped chat prompts, in order: the same script for both servers."""
    from sinkchat.bench.chat_bench import load_prompts

    flat = [turn for conversation in load_prompts() for turn in conversation]
    return [flat[i % len(flat)] for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """One server subprocess and a client for it."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], log: Path, model_id: str) -> None:
        self.name, self.port, self.model_id = name, port, model_id
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/v1"

    def wait(self, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SinkchatError(f"{self.name} exited at start-up; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise SinkchatError(f"{self.name} did not start within {timeout:.0f} s; see {self.log}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_file.close()


def start_servers(model: Path, config: ServeBenchConfig, work: Path) -> dict[str, _Server]:
    settings = work / "config.toml"
    settings.touch()
    env = {**os.environ, "SINKCHAT_CONFIG": str(settings), "SINKCHAT_DATA_DIR": str(work / "data")}
    model_id = model.name.removesuffix(".gguf")
    common = [str(config.n_ctx)]
    port = free_port()
    sink = _Server(
        "sinkchat",
        [sys.executable, "-m", "sinkchat", "serve", "--model", str(model), "-c", *common, "-t", str(config.threads),
         "--port", str(port), "--temperature", "0", "--max-tokens", str(config.max_tokens), "--flash-attn", "off"],
        port, env, work / "sinkchat.log", model_id,
    )  # fmt: skip
    port = free_port()
    llama = _Server(
        "llama_cpp.server",
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_ctx", *common,
         "--n_threads", str(config.threads), "--n_threads_batch", str(config.threads),
         "--host", "127.0.0.1", "--port", str(port), "--model_alias", model_id, "--flash_attn", "false"],
        port, env, work / "llama_cpp_server.log", model_id,
    )  # fmt: skip
    return {"sinkchat": sink, "llama_cpp.server": llama}


class _Conversation:
    """A client's side of the conversation with one server: the history it sends, trimmed when refused."""

    def __init__(self, server: _Server, config: ServeBenchConfig) -> None:
        import openai

        self.server, self.config = server, config
        self.client = openai.OpenAI(base_url=server.url, api_key="bench", max_retries=0, timeout=600)
        self.exchanges: list[tuple[str, str]] = []
        self.dropped = 0
        self.refusals = 0
        """Requests refused (an error, or a stream that ended without a word) before one was accepted."""
        self.last_sent_start = 0

    def turn(self, number: int, question: str) -> TurnResult:
        import openai

        trimmed = False
        while True:
            messages = [{"role": "system", "content": self.config.system}]
            for user, reply in self.exchanges[self.dropped :]:
                messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
            messages.append({"role": "user", "content": question})
            started = time.perf_counter()
            try:
                text, ttft, usage, facts, finish = self._stream(messages, started)
                refused = finish is None and not text  # llama_cpp.server ends the stream without a word
            except (openai.APIStatusError, openai.APIConnectionError) as exc:
                if isinstance(exc, openai.APIStatusError) and not _is_overflow(exc):
                    raise
                refused = True
            if refused:
                self.refusals += 1
                if self.dropped >= len(self.exchanges):
                    return TurnResult(self.server.name, number, None, time.perf_counter() - started, None, None,
                                      None, 0, self.dropped, "failed", False)  # fmt: skip
                self.dropped += 1
                trimmed = True
                continue
            rereads = bool(facts.get("rebuilt")) if facts else self.dropped != self.last_sent_start
            self.last_sent_start = self.dropped
            self.exchanges.append((question, text))
            return TurnResult(
                server=self.server.name,
                turn=number,
                ttft_s=ttft,
                seconds=time.perf_counter() - started,
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                evaluated_tokens=facts.get("evaluated_tokens") if facts else None,
                sent_exchanges=len(self.exchanges) - 1 - self.dropped,
                dropped_exchanges=self.dropped,
                status="trimmed" if trimmed or self.dropped else "ok",
                rereads=rereads,
            )

    def _stream(
        self, messages: list[dict[str, str]], started: float
    ) -> tuple[str, float | None, dict, dict, str | None]:
        stream = self.client.chat.completions.create(
            model=self.server.model_id,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=self.config.max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces: list[str] = []
        ttft = None
        usage: dict[str, Any] = {}
        facts: dict[str, Any] = {}
        finish = None
        for chunk in stream:
            if chunk.choices:
                finish = chunk.choices[0].finish_reason or finish
                content = chunk.choices[0].delta.content
                if content and ttft is None:
                    ttft = time.perf_counter() - started
                if content:
                    pieces.append(content)
                extra = chunk.model_extra or {}
                if "sinkchat" in extra:
                    facts = extra["sinkchat"]
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
        return "".join(pieces), ttft, usage, facts, finish


def _is_overflow(exc: Exception) -> bool:
    """Whether a server refused a request for being longer than its context (the bench then trims)."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("code") == "context_length_exceeded":
        return True
    text = str(exc).lower()
    return "maximum context length" in text or ("exceed" in text and "context" in text)


def _ms(seconds: tuple[float | None, float | None, float | None]) -> tuple[float | None, ...]:
    return tuple(None if v is None else v * 1000 for v in seconds)


def run_serve_bench(
    model: Path, config: ServeBenchConfig, *, work: Path | None = None, progress: bool = True
) -> list[TurnResult]:
    """The conversation against both servers, turn by turn, alternating which goes first."""
    script = questions(config.turns)
    results: list[TurnResult] = []
    with ExitStack() as stack:
        folder = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sinkchat-serve-bench-")))
        servers = start_servers(model, config, folder)
        for server in servers.values():
            stack.callback(server.close)
        for server in servers.values():
            server.wait(config.startup_timeout)
        conversations = {name: _Conversation(server, config) for name, server in servers.items()}
        for number, question in enumerate(script, start=1):
            order = list(SERVERS) if number % 2 else list(reversed(SERVERS))
            for name in order:
                result = conversations[name].turn(number, question)
                results.append(result)
                if progress:
                    ttft = f"{result.ttft_s * 1000:7.0f} ms" if result.ttft_s is not None else "      -   "
                    print(f"turn {number:3d} {name:17s} {ttft}  {result.status}", file=sys.stderr, flush=True)
    return results


def summarize(results: Sequence[TurnResult]) -> list[dict[str, Any]]:
    rows = []
    for name in SERVERS:
        mine = [r for r in results if r.server == name]
        if not mine:
            continue
        ok = [r for r in mine if r.status != "failed"]
        refused = [r.turn for r in mine if r.status != "ok"]
        rereads = [r.turn for r in mine if r.rereads]
        early = _ms(spread([r.ttft_s for r in mine if 2 <= r.turn <= 6 and r.ttft_s is not None]))
        late = _ms(spread([r.ttft_s for r in mine[-10:] if r.ttft_s is not None]))
        rows.append(
            {
                "server": name,
                "turns_ok": len(ok),
                "first_failure": refused[0] if refused else None,
                "first_reread": rereads[0] if rereads else None,
                "ttft_early_min_ms": early[0],
                "ttft_early_ms": early[1],
                "ttft_early_max_ms": early[2],
                "ttft_late_min_ms": late[0],
                "ttft_late_ms": late[1],
                "ttft_late_max_ms": late[2],
            }
        )
    return rows


def write_results(results: Sequence[TurnResult], out: Path) -> dict[str, Path | None]:
    from sinkchat.bench import plots
    from sinkchat.bench.report import write_csv

    files: dict[str, Path | None] = {
        "turns": write_csv(out / "serve_turns.csv", [asdict(r) for r in results]),
        "summary": write_csv(out / "serve_summary.csv", summarize(results)),
    }
    if plots.available():
        files["plot"] = plot(results, out / "serve.png")
    return files


def plot(results: Sequence[TurnResult], path: Path) -> Path:
    from sinkchat.bench.plots import pyplot

    plt = pyplot()
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(8, 6.4), sharex=True, height_ratios=[3, 2])
    colors = {"sinkchat": "#1f77b4", "llama_cpp.server": "#ff7f0e"}
    for name in SERVERS:
        mine = [r for r in results if r.server == name and r.ttft_s is not None]
        if not mine:
            continue
        ax.plot([r.turn for r in mine], [r.ttft_s * 1000 for r in mine], label=name, color=colors[name], lw=1.4)
        bx.plot([r.turn for r in mine], [r.sent_exchanges for r in mine], color=colors[name], lw=1.4)
        refused = [r.turn for r in results if r.server == name and r.status != "ok"]
        if refused:
            ax.axvline(refused[0], color=colors[name], ls=":", lw=1)
            ax.annotate(f"{name}: history refused,\nclient trims from here", (refused[0], ax.get_ylim()[1] * 0.9),
                        xytext=(4, 0), textcoords="offset points", fontsize=8, color=colors[name], va="top")  # fmt: skip
    ax.set_ylabel("time to first token (ms)")
    ax.set_title("One long conversation over the OpenAI API: time to first token per turn")
    ax.legend(loc="upper left")
    bx.set_ylabel("earlier exchanges sent")
    bx.set_xlabel("turn")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def read_results(path: Path) -> list[TurnResult]:
    """Results from a ``serve_turns.csv`` (to plot them again)."""
    from sinkchat.bench.report import read_csv

    def number(text: str, kind: type = int) -> Any:
        return kind(text) if text != "" else None

    return [
        TurnResult(
            server=row["server"],
            turn=int(row["turn"]),
            ttft_s=number(row["ttft_s"], float),
            seconds=float(row["seconds"]),
            prompt_tokens=number(row["prompt_tokens"]),
            completion_tokens=number(row["completion_tokens"]),
            evaluated_tokens=number(row["evaluated_tokens"]),
            sent_exchanges=int(row["sent_exchanges"]),
            dropped_exchanges=int(row["dropped_exchanges"]),
            status=row["status"],
            rereads=row["rereads"] == "True",
        )
        for row in read_csv(path)
    ]


def config_json(config: ServeBenchConfig, model: Path) -> dict[str, Any]:
    import importlib.metadata as md

    return {
        **config.model_dump(),
        "model": model.name,
        "llama_cpp_python": md.version("llama_cpp_python"),
        "client": f"openai {md.version('openai')}",
        "note": "turns alternate between the servers; TTFT = request to first streamed content",
        "flash_attn": "off on both servers",
    }
