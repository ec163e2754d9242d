"""`bot finetune sft | retriever` and `bot eval answers`: registered on the CLI through the `servicebot.cli` hook."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bot.cli import ConfigOpt, _progress, _settings, friendly
from bot.errors import ServicebotError

# Options `sft` and `data` share: the same run config builds the same training set.
RunConfigOpt = Annotated[Path | None, typer.Option("--config", help="Fine-tuning YAML (see finetune/configs).")]
SettingsOpt = Annotated[Path | None, typer.Option("--settings", help="servicebot YAML (default: built-in).")]
StrictOpt = Annotated[bool, typer.Option(help="Fail on the first malformed JSONL line instead of skipping it.")]

finetune_app = typer.Typer(
    help="Fine-tune the responder (LoRA / prefix tuning) and the retriever.", no_args_is_help=True
)


@finetune_app.command("sft")
@friendly
def sft(
    method: Annotated[str | None, typer.Option(help="lora or prefix (overrides the file).")] = None,
    run_config: RunConfigOpt = None,
    settings_file: SettingsOpt = None,
    strict: StrictOpt = False,
    restart: Annotated[bool, typer.Option(help="Ignore an interrupted run's checkpoint.")] = False,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Train on a set `bot finetune data --out DIR` wrote (no index needed)."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (overrides the file).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line.")] = False,
) -> None:
    """Train a PEFT adapter on the knowledge base, accepted transcripts and safety examples."""
    from finetune.sft import load_config, train

    if method not in (None, "lora", "prefix"):
        raise ServicebotError("--method must be 'lora' or 'prefix'.")
    if device not in (None, "auto", "cpu", "cuda"):
        raise ServicebotError("--device must be 'auto', 'cpu' or 'cuda'.")
    settings, cfg = _settings(settings_file), load_config(run_config, method)
    if device:
        cfg = cfg.model_copy(update={"device": device})
    bar, update = _progress(f"Training {cfg.method} adapter '{cfg.name}'")
    try:
        with bar:
            report = train(settings, cfg, update, strict=strict, restart=restart, log=bar.console.print, data=data)
    except KeyboardInterrupt:
        typer.secho("Interrupted: run the same command again to resume from the last checkpoint.", err=True)
        raise typer.Exit(130) from None
    print(json.dumps(report, indent=None if as_json else 2))


@finetune_app.command("data")
@friendly
def data(
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl, dev.jsonl and build.json.")],
    run_config: RunConfigOpt = None,
    settings_file: SettingsOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Build a run's training set through retrieval and write it out, to train on another machine (--data)."""
    from finetune.prebuilt import save
    from finetune.sft import build_training_set, load_config

    summary = save(build_training_set(_settings(settings_file), load_config(run_config), strict), out)
    print(json.dumps(summary, indent=2, ensure_ascii=False))


@finetune_app.command("retriever")
@friendly
def retriever(
    embedder: Annotated[str, typer.Option(help="minilm (the transformer) or static (its token table).")] = "minilm",
    name: Annotated[
        str | None, typer.Option(help="Saved as <data_dir>/embedders/NAME (kestrel-minilm / kestrel-static).")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Default 3 (minilm) or 2 (static).")] = None,
    lr: Annotated[float | None, typer.Option(min=0, help="Default 2e-5 (minilm) or 3e-3 (static).")] = None,
    distil_steps: Annotated[
        int, typer.Option(min=0, help="static: batches fitting the table to MiniLM's vectors first.")
    ] = 300,
    tau: Annotated[float, typer.Option(help="InfoNCE temperature.")] = 0.05,
    hard_negatives: Annotated[int, typer.Option(min=0, help="Mined hard negatives per query.")] = 2,
    headings: Annotated[bool, typer.Option(help="Also train 'title: section' queries on every chunk.")] = True,
    queries: Annotated[
        str, typer.Option(help="static: minilm (MiniLM embeds questions, the table passages) or table.")
    ] = "minilm",
    qa: Annotated[Path, typer.Option("--qa", help="QA JSONL: train split tunes, held-out evaluates.")] = Path(
        "knowledge/demo/qa.jsonl"
    ),
    max_distil_texts: Annotated[
        int, typer.Option(min=100, help="static: at most this many texts MiniLM embeds to distil (a sample).")
    ] = 20_000,
    max_queries: Annotated[
        int, typer.Option(min=1, help="At most this many heading/span queries (a sample; questions all kept).")
    ] = 20_000,
    no_qa: Annotated[
        bool, typer.Option("--no-qa", help="No QA file: tune on the knowledge alone (headings; distil for static).")
    ] = False,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line.")] = False,
) -> None:
    """Contrastive (InfoNCE) tuning of the embedder; recall@5 and MRR on held-out questions before and after."""
    from finetune.retriever import RetrieverConfig, tune

    if embedder not in ("minilm", "static"):
        raise ServicebotError("--embedder must be 'minilm' or 'static'.")
    if queries not in ("minilm", "table"):
        raise ServicebotError("--queries must be 'minilm' or 'table'.")
    cfg = RetrieverConfig(
        embedder=embedder,  # type: ignore[arg-type]  # checked above
        name=name,
        epochs=epochs,
        lr=lr,
        distil_steps=distil_steps,
        tau=tau,
        hard_negatives=hard_negatives,
        qa_file=None if no_qa else qa,
        headings=headings,
        queries=queries,  # type: ignore[arg-type]  # checked above
        max_distil_texts=max_distil_texts,
        max_queries=max_queries,
    )
    bar, update = _progress(f"Tuning {embedder} embedder '{cfg.name}'")
    with bar:
        report = tune(_settings(config), cfg, update)
    print(json.dumps(report, indent=None if as_json else 2))
    if not as_json:
        print(f"Use it with `embedder: {{name: {embedder}, config: {{model: {cfg.name}}}}}`, then `bot index rebuild`.")


@friendly
def eval_answers(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line.")] = False,
    adapter: Annotated[
        str | None, typer.Option(help="Adapter name or path for the responder; none = base model.")
    ] = None,
    split: Annotated[str, typer.Option(help="heldout, train or all.")] = "heldout",
    qa: Annotated[Path, typer.Option("--qa", help="QA JSONL with reference answers.")] = Path(
        "knowledge/demo/qa.jsonl"
    ),
    limit: Annotated[int | None, typer.Option(help="At most this many questions.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Answer the demo questions through the pipeline: F1, containment, citations, grounding, refusals, latency."""
    from finetune.answers import evaluate_answers

    settings = _settings(config)
    bar, update = _progress("Answering")
    with bar:
        report = evaluate_answers(settings, qa, split, adapter, limit, update)
    if not as_json:
        report = {k: v for k, v in report.items() if k != "per_question"}
    print(json.dumps(report, indent=None if as_json else 2, ensure_ascii=False))


def register(groups: dict[str, typer.Typer]) -> None:
    """Add `bot finetune ...` and `bot eval answers` to the CLI."""
    groups["root"].add_typer(finetune_app, name="finetune")
    groups["eval"].command("answers")(eval_answers)
