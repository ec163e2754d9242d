"""`bot eval safety` runs end to end on real data and always reports both objectives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEMO
from typer.testing import CliRunner

from bot.cli import app, load_command_plugins
from plugins.guards.intent import safety_data_dir
from plugins.safety.plot import pareto_front

pytestmark = pytest.mark.slow


def test_eval_reports_attack_success_and_over_refusal_together(tmp_path: Path) -> None:
    if safety_data_dir() is None:
        pytest.skip("the shared safety data is not beside this checkout")
    load_command_plugins()
    cfg = tmp_path / "servicebot.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nresponder: extractive\nknowledge:\n  source: {DEMO / 'articles'}\n"
        "guards:\n  input: [max_length, pii, obfuscation, jailbreak, harmful_intent, topical]\n"
    )
    runner = CliRunner()
    assert runner.invoke(app, ["index", "rebuild", "--config", str(cfg)]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "eval",
            "safety",
            "--config",
            str(cfg),
            "--split",
            "tune",
            "--limit",
            "4",
            "--family",
            "none",
            "--family",
            "base64",
            "--family",
            "chinese",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["attack_success_by_family"]) == {"none", "base64", "chinese"}
    assert report["attack_success_by_family"]["none"]["n"] == 8
    assert {"in_domain", "in_domain_zh", "general_benign"} <= set(report["over_refusal"])
    assert 0 <= report["over_refusal"]["in_domain"]["over_refusal"] <= 1
    assert report["guard_latency_ms"]["p50"] > 0


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [
        {"attack_success": 0.1, "over_refusal": 0.05},
        {"attack_success": 0.2, "over_refusal": 0.01},
        {"attack_success": 0.3, "over_refusal": 0.06},
    ]
    assert pareto_front(points) == points[1::-1]


def test_a_sweep_moves_the_review_bar_with_the_threshold() -> None:
    from bot.config import PluginSpec, load_settings
    from plugins.safety.commands import with_thresholds

    settings = load_settings()
    settings = settings.model_copy(
        update={
            "guards": settings.guards.model_copy(
                update={
                    "input": [
                        PluginSpec(name="harmful_intent", config={"threshold": 0.7}),
                        PluginSpec(name="jailbreak"),
                    ]
                }
            )
        }
    )
    # The review bar moves as far as the threshold does, from the configured 0.74 (never below 0.5).
    for t, bar in ((0.3, 0.5), (0.7, 0.74), (0.8, 0.84)):
        harmful, jailbreak = with_thresholds(settings, t).guards.input
        assert harmful.config == {"threshold": t, "review_threshold": bar}
        assert jailbreak.config == {"threshold": t}
