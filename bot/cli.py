"""The `bot` command line: serve, ask, index, plugins, prepare."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bot.config import DEFAULT_CONFIG, Settings, load_settings
from bot.errors import ServicebotError

app = typer.Typer(help="servicebot: a self-hosted, plugin-based customer-service bot.", no_args_is_help=True)
index_app = typer.Typer(help="Build and inspect the knowledge index.", no_args_is_help=True)
app.add_typer(index_app, name="index")
eval_app = typer.Typer(help="Evaluate retrieval, safety and answers.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
GROUPS: dict[str, typer.Typer] = {"root": app, "index": index_app, "eval": eval_app}
_LOADED: set[str] = set()

F = TypeVar("F", bound=Callable[..., Any])
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (default: built-in).")]


def friendly(fn: F) -> F:
    """Show user errors as one sentence and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ServicebotError as exc:
            typer.secho(f"Error: {exc}", err=True, fg="red")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _settings(config: Path | None) -> Settings:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return load_settings(config)


def _progress(label: str) -> tuple[Any, Callable[[int, int], None]]:
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(transient=False, console=Console(stderr=True))  # stdout stays clean for --json
    task = bar.add_task(label, total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _ensure_index(settings: Settings) -> None:
    """Build the index on first start so the one-command setup serves straight away, and rebuild it (in full,
    by the embedder guard) when the configured embedder is not the one its vectors came from: a changed
    `embedder` setting then serves at once instead of refusing every query."""
    from bot.service import Service

    service = Service.start(settings, warm=False)
    status = service.index.status()
    if status.get("built") and status.get("embedder_fits", True):
        return
    label = "First start: indexing the knowledge base"
    if status.get("built"):
        wanted = getattr(service.pipeline.embedder, "id", "?")
        label = f"The embedder changed ({status.get('embedder')} -> {wanted}): indexing the knowledge base again"
    bar, update = _progress(label)
    with bar:
        report = service.index.rebuild(settings.knowledge.source, update)
    print(f"Indexed {report.documents} documents as {report.chunks} chunks ({len(report.skipped)} skipped).")


@app.command()
@friendly
def serve(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
) -> None:
    """Start the web chat on 127.0.0.1."""
    from bot.web import serve as run_server

    settings = _settings(config)
    _ensure_index(settings)
    source = config or Path(os.environ.get("SERVICEBOT_CONFIG", DEFAULT_CONFIG))
    run_server(settings, host or settings.server.host, port or settings.server.port, source)


@app.command()
@friendly
def ask(
    text: Annotated[str | None, typer.Argument(help="The question.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="JSONL of {id, messages} requests.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON reply contract.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Answer a question, or every conversation in a JSONL file (one model load)."""
    from bot.batch import answer_file
    from bot.service import Service, parse_messages, reply_json, sources

    if (text is None) == (file is None):
        raise ServicebotError("Give either a question or --file, not both or neither.")
    settings = _settings(config)
    if text is not None:
        messages = parse_messages([{"role": "user", "content": text}], settings.server.max_message_chars)
    service = Service.start(settings)
    if file is not None:
        for line in answer_file(service, file):
            print(json.dumps(line, ensure_ascii=False), flush=True)
        return
    reply = service.ask_messages(messages)
    if as_json:
        print(json.dumps(reply_json(reply), ensure_ascii=False))
        return
    print(reply.answer)
    for s in sources(reply):
        print(f"  source: {s['title']} ({s['id']}, score {s['score']:.2f})")


# `bot index rebuild | status | diff | rollback` live in bot/cli_index.py (they need the helpers above).
from bot import cli_index  # noqa: E402, F401


@app.command()
@friendly
def plugins(config: ConfigOpt = None) -> None:
    """List installed plugins and which are active, with their config."""
    from bot.plugins_report import report

    print(report(_settings(config)))


@app.command()
@friendly
def prepare(config: ConfigOpt = None) -> None:
    """Load (and on first use convert) the models, and build the index if there is none."""
    from bot.service import Service

    settings = _settings(config)
    _ensure_index(settings)
    Service.start(settings, warm=True)
    print("Ready.")


@app.command()
@friendly
def adapters(
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the responder's PEFT adapters (switch live in the operator console or via the YAML)."""
    from bot.service import Service

    found = Service.start(_settings(config), warm=False).adapters()
    if as_json:
        print(json.dumps(found, indent=2, default=str))
        return
    for a in found or [{"name": "(none)", "method": "", "base_model": "", "active": False}]:
        mark = "*" if a.get("active") else " "
        print(f"{mark} {a['name']:<24} {a.get('method', ''):<8} {a.get('base_model', '')}")


def load_command_plugins() -> None:
    """Let installed packages add commands: entry points in `servicebot.cli` are `register(groups)` hooks.

    This is how `knowledge` and `plugins` contribute commands without `bot` importing them.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group="servicebot.cli"):
        if ep.name in _LOADED:
            continue
        _LOADED.add(ep.name)
        try:
            ep.load()(GROUPS)
        except Exception as exc:  # a broken add-on must not take the whole CLI down
            typer.secho(f"warning: command plugin '{ep.name}' failed to load: {exc}", err=True, fg="yellow")


def main() -> None:
    """Console-script entry point."""
    load_command_plugins()
    app()


if __name__ == "__main__":
    main()
