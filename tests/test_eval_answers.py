"""`bot eval answers`: the real pipeline (tiny Llama responder, real index and guards) scored against references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import DEMO
from typer.testing import CliRunner

from bot.cli import app, load_command_plugins
from bot.contracts import Passage, Reply, Verdict
from finetune.answers import score_reply
from finetune.metrics import containment, token_f1

runner = CliRunner()
load_command_plugins()


@pytest.fixture()
def config(demo_service: Any, tiny_llama: Path, tmp_path: Path) -> Path:
    """A config file: the demo index (copied), the tiny Llama as `hf` model, grounding as an output guard."""
    shutil.copytree(demo_service.settings.index_dir, tmp_path / "data" / "index")
    path = tmp_path / "servicebot.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "responder": {"name": "hf", "config": {"model": str(tiny_llama), "max_new_tokens": 8}},
                "guards": {"input": ["max_length"], "output": ["grounding"]},
                "knowledge": {"source": str(DEMO / "articles")},
            }
        ),
        encoding="utf-8",
    )
    return path


def test_token_f1_and_containment() -> None:
    assert token_f1("Reset links last 30 minutes [1].", "Reset links are valid for 30 minutes.") == pytest.approx(
        2 * (4 / 5) * (4 / 7) / (4 / 5 + 4 / 7)
    )
    assert token_f1("", "anything") == 0.0
    assert containment("valid for 30 minutes, reset links", "Reset links are valid for 30 minutes.") == pytest.approx(
        6 / 7
    )


def test_citations_count_as_right_only_when_the_cited_passage_is_from_an_answering_article() -> None:
    sources = (Passage("a#1", "text", 0.9, doc_id="wrong"), Passage("b#1", "text", 0.8, doc_id="reset-password"))
    grounding = Verdict("grounding", False, 0.8, "grounding", "2/2 sentences unsupported: replaced by an extract")
    reply = Reply("See [2] and [1], also [7].", False, False, sources, (grounding,), latency_ms={"total": 5.0})
    scored = score_reply(reply, "reset", ["reset-password"])
    assert (scored["cited"], scored["cited_right"], scored["unsupported"]) == (2, 1, True)


def test_eval_answers_runs_the_pipeline_on_the_split_and_reports_every_measure(config: Path) -> None:
    result = runner.invoke(app, ["eval", "answers", "--json", "--limit", "3", "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["split"] == "heldout" and report["questions"] == 3
    assert [q["id"] for q in report["per_question"]] == ["q003", "q006", "q009"]
    for key in ("token_f1", "containment", "refusal_rate", "handoff_rate", "cited_answers"):
        assert 0.0 <= report[key] <= 1.0
    assert report["latency_ms"]["median"] > 0
    # A random tiny model writes nonsense: the grounding guard must flag it on every answered question.
    answered = [q for q in report["per_question"] if not q["refused"] and not q["handoff"]]
    assert answered and all(q["unsupported"] for q in answered)


def test_eval_answers_with_an_unknown_adapter_or_split_is_one_clear_error(config: Path) -> None:
    result = runner.invoke(app, ["eval", "answers", "--adapter", "nope", "--config", str(config)])
    assert result.exit_code == 2 and "Adapter 'nope' was not found" in result.output
    result = runner.invoke(app, ["eval", "answers", "--split", "test", "--config", str(config)])
    assert result.exit_code == 2 and "--split must be one of" in result.output
