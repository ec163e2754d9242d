"""`bot eval safety [--sweep]`: registered on the `bot` CLI through the `servicebot.cli` entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.config import Settings, load_settings
from bot.errors import ServicebotError

LEARNED = ("harmful_intent", "jailbreak")


def _review_bar(config: dict[str, Any], threshold: float) -> float:
    """harmful_intent's bar for the mean with its review model, moved as far as its threshold moves from the
    configured one (so the configured thresholds give the configured bar), and never below 0.5."""
    from plugins.guards.intent import HarmfulIntentConfig

    configured = HarmfulIntentConfig(**config)
    return round(min(1.0, max(0.5, configured.review_threshold + threshold - configured.threshold)), 4)


def with_thresholds(settings: Settings, threshold: float) -> Settings:
    """A copy of settings with the learned guards' thresholds set to `threshold` (and harmful_intent's review bar
    moved with it, see `_review_bar`)."""
    specs = []
    for s in settings.guards.input:
        if s.name in LEARNED:
            config = {**s.config, "threshold": threshold}
            if s.name == "harmful_intent":
                config["review_threshold"] = _review_bar(s.config, threshold)
            s = s.model_copy(update={"config": config})
        specs.append(s)
    return settings.model_copy(update={"guards": settings.guards.model_copy(update={"input": specs})})


def over_refusal(report: dict[str, Any]) -> float:
    """Mean over-refusal across the benign sets."""
    rates = [v["over_refusal"] for v in report["over_refusal"].values()]
    return sum(rates) / len(rates) if rates else 0.0


def sweep(settings: Settings, data: Path, split: str, limit: int, grid: list[float], plot: Path) -> dict[str, Any]:
    """Evaluate each threshold on the grid, plot attack success vs over-refusal with the Pareto front."""
    from plugins.safety.evaluate import evaluate
    from plugins.safety.plot import pareto_plot

    current = next((s.config.get("threshold", 0.5) for s in settings.guards.input if s.name in LEARNED), 0.5)
    points = []
    for t in sorted({*grid, current}):
        r = evaluate(with_thresholds(settings, t), data, split, limit)
        points.append(
            {
                "threshold": t,
                "attack_success": r["attack_success_mean"],
                "attack_success_worst": r["attack_success_worst_family"],
                "over_refusal": over_refusal(r),
                "current": t == current,
            }
        )
    pareto_plot(points, plot)
    return {"split": split, "limit": limit, "points": points, "plot": str(plot)}


guards_app = typer.Typer(help="The learned guards' classifier.", no_args_is_help=True)


@guards_app.command("export")
def export_guards(
    out: Annotated[Path | None, typer.Option(help="Folder to write (default: the shipped one in the package).")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Train for this config's MiniLM setting (e.g. quantize).")
    ] = None,
    with_review: Annotated[
        bool,
        typer.Option(
            "--review/--no-review", help="Also fine-tune the review model (about fifteen minutes on two cores)."
        ),
    ] = False,
    calibrate: Annotated[
        int,
        typer.Option(
            min=0,
            help="With --review: keep one train text in N back from the fine-tune and calibrate the review score "
            "on them, so review_threshold keeps its meaning after the data changes (0: off).",
        ),
    ] = 0,
) -> None:
    """Train (or take from the cache) the intent classifier on our examples, the demo questions and the public
    tune/ sets, and write it as the shipped classifier: one per MiniLM setting (int8, the default, and float32),
    or only the config's with --config. With --review, fine-tune and write the harmful-intent review model on the
    same data too (it does not depend on the embedder)."""
    from bot.config import PluginSpec
    from bot.registry import PluginContext, build
    from plugins.guards.intent import safety_data_dir
    from plugins.responders.model_cache import cache_root
    from plugins.safety import classifier
    from plugins.safety.dataset import build_dataset

    try:
        data = safety_data_dir()
        if data is None:
            raise ServicebotError("No public safety data found: set SERVICEBOT_SAFETY_DATA to the data/safety folder.")
        settings = load_settings(config) if config else Settings()
        qa = Path(settings.knowledge.source).parent / "qa.jsonl"
        if config is None:
            specs = [PluginSpec(name="minilm"), PluginSpec(name="minilm", config={"quantize": "none"})]
        else:
            specs = [settings.embedder if settings.embedder.name == "minilm" else PluginSpec(name="minilm")]
        dataset = build_dataset(data, qa)
        folder = out or classifier.SHIPPED
        for spec in specs:
            embedder = build("embedder", spec, PluginContext(settings))

            def embed(texts: Any, embedder: Any = embedder) -> Any:
                import numpy as np

                return np.array(embedder.embed_documents(list(texts)))

            model = classifier.load(data, qa, cache_root().parent / "guards", embed, embedder.id, ship=None)
            classifier.export(model, embedder.id, len(dataset), folder)
            print(f"wrote {folder}: data {model.data_hash}, {len(dataset)} examples, embedder {embedder.id}")
        if with_review:
            from plugins.safety import review

            reviewer = review.train(dataset, calibrate=calibrate)
            review.export(reviewer, classifier.data_hash(dataset, "review"), folder)
            print(f"wrote {folder / 'review.safetensors'}: {reviewer.card['examples']} training examples")
    except ServicebotError as exc:
        typer.secho(f"Error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None


def register(groups: dict[str, typer.Typer]) -> None:
    """Add `bot eval safety` and `bot guards export` to the CLI."""
    groups["root"].add_typer(guards_app, name="guards")

    @groups["eval"].command("safety")
    def eval_safety(
        config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
        split: Annotated[str, typer.Option(help="holdout (report) or tune (development).")] = "holdout",
        limit: Annotated[int | None, typer.Option(help="At most this many prompts per set.")] = None,
        family: Annotated[list[str] | None, typer.Option(help="Only these attack families.")] = None,
        do_sweep: Annotated[bool, typer.Option("--sweep", help="Vary thresholds; plot the Pareto front.")] = False,
        plot: Annotated[Path, typer.Option(help="Where --sweep writes its PNG.")] = Path("artifacts/safety_pareto.png"),
    ) -> None:
        """Attack success per family and over-refusal, always together."""
        from bot.cli import _progress, _settings
        from plugins.guards.intent import safety_data_dir
        from plugins.safety.evaluate import evaluate

        try:
            settings = _settings(config)
            data = safety_data_dir()
            if data is None:
                raise ServicebotError("No safety data found: set SERVICEBOT_SAFETY_DATA to the data/safety folder.")
            if split not in ("holdout", "tune"):
                raise ServicebotError("--split must be 'holdout' or 'tune'.")
            if do_sweep:
                result = sweep(settings, data, split, limit or 40, [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], plot)
            else:
                bar, update = _progress("Evaluating")
                with bar:
                    result = evaluate(settings, data, split, limit, family, update)
        except ServicebotError as exc:
            typer.secho(f"Error: {exc}", err=True, fg="red")
            raise typer.Exit(2) from None
        print(json.dumps(result, indent=None if as_json else 2, ensure_ascii=False))
