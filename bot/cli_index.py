"""`bot index rebuild | status | diff | rollback`: the knowledge lifecycle, through the retriever's Indexed protocol."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from bot.cli import ConfigOpt, _progress, _settings, friendly, index_app
from bot.config import Settings
from bot.contracts import BuildReport, Indexed

SourceOpt = Annotated[
    list[Path] | None,
    typer.Option("--source", help="Folder of documents; repeat for several (default: knowledge.source)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _index(settings: Settings) -> Indexed:
    from bot.service import Service

    return Service.start(settings, warm=False).index


def print_report(report: BuildReport, as_json: bool, built: bool = True) -> None:
    """The build report: what was added, changed, deleted or skipped (with reasons), checks and timings."""
    if as_json:
        print(json.dumps(asdict(report), default=str))
        return
    for path, reason in report.skipped:
        typer.secho(f"  skipped  {path}: {reason}", fg="yellow")
    for label, ids in (("added", report.added), ("changed", report.changed), ("deleted", report.deleted)):
        for doc_id in ids:
            print(f"  {label:<8} {doc_id}")
    for name, passed, detail in report.checks:
        verdict = "passed" if passed else "FAILED"
        typer.secho(f"  check    {name}: {verdict} ({detail})", fg="green" if passed else "red")
    kind = f"full ({report.reason})" if report.full else "incremental"
    counts = (
        f"{len(report.added)} added, {len(report.changed)} changed, {len(report.deleted)} deleted, "
        f"{report.unchanged} unchanged, {len(report.skipped)} skipped"
    )
    if not built:
        print(f"A rebuild would be {kind}: {counts}; {report.documents} documents, {report.chunks} chunks.")
        return
    if not report.switched:
        print(f"Nothing to do ({report.reason}): version {report.version} keeps serving; {counts}.")
        return
    timings = ", ".join(f"{k} {v:.2f}s" for k, v in report.timings.items())
    print(
        f"Indexed {report.documents} documents as {report.chunks} chunks in {report.seconds:.1f}s "
        f"(version {report.version}, {kind}; {counts}; {report.embedded} chunks embedded; {timings})."
    )


@index_app.command("rebuild")
@friendly
def index_rebuild(
    source: SourceOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Re-embed everything into a fresh version.")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a new index version (only changed documents are embedded) and switch to it once it passes checks."""
    settings = _settings(config)
    index = _index(settings)
    bar, update = _progress("Embedding chunks")
    with bar:
        report = index.rebuild(source or settings.knowledge.source, update, full=full)
    print_report(report, as_json)


@index_app.command("diff")
@friendly
def index_diff(source: SourceOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show what a rebuild would add, change, delete and skip, without building anything."""
    settings = _settings(config)
    print_report(_index(settings).diff(source or settings.knowledge.source), as_json, built=False)


@index_app.command("rollback")
@friendly
def index_rollback(config: ConfigOpt = None) -> None:
    """Serve the previous index version again (a running `bot serve` follows within one query)."""
    print(f"Now serving version {_index(_settings(config)).rollback()}.")


@index_app.command("status")
@friendly
def index_status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Show what is indexed: version, counts, embedder, build time, history, a rebuild in progress."""
    status = _index(_settings(config)).status()
    if as_json:
        print(json.dumps(status, default=str))
        return
    if not status.get("built"):
        print(f"Index '{status['collection']}' is not built yet: run `bot index rebuild`.")
        return
    for key, value in status.items():
        print(f"{key:>12}: {value}")
