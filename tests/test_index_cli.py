"""`bot index rebuild | diff | status | rollback` and `bot eval retrieval` through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import DEMO
from typer.testing import CliRunner

import bot.cli
from bot.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def commands() -> None:
    bot.cli.load_command_plugins()


def config(tmp_path: Path, source: Path, embedder: str = "hashing", qa: str = "") -> Path:
    path = tmp_path / "servicebot.yaml"
    path.write_text(
        f"data_dir: {tmp_path / 'data'}\nembedder: {embedder}\nresponder: extractive\n"
        f"knowledge:\n  source: {source}\n{qa}"
    )
    return path


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_rebuild_diff_status_rollback_round_trip(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(DEMO / "articles", kb)
    cfg = str(config(tmp_path, kb))
    first = json.loads(run("index", "rebuild", "--config", cfg, "--json").splitlines()[-1])
    assert first["switched"] and first["full"] and first["documents"] == 51
    (kb / "gift-returns.md").unlink()
    refund = kb / "refund-timing.md"
    refund.write_text(refund.read_text() + "\nRefunds to gift cards are instant.\n")
    (kb / "broken.pdf").write_bytes(b"%PDF-1.4 nonsense")
    diff = run("index", "diff", "--config", cfg)
    assert "  added" not in diff and "changed  refund-timing" in diff and "deleted  gift-returns" in diff
    assert "skipped  broken.pdf" in diff and "A rebuild would be incremental: 0 added, 1 changed, 1 deleted" in diff
    out = run("index", "rebuild", "--config", cfg)
    assert "incremental" in out and "check    non-empty: passed" in out and "Indexed 50 documents" in out
    status = json.loads(run("index", "status", "--config", cfg, "--json"))
    assert status["documents"] == 50 and status["history"] == [first["version"]] and status["segments"] == 2
    assert first["version"] in run("index", "rollback", "--config", cfg)
    assert json.loads(run("index", "status", "--config", cfg, "--json"))["documents"] == 51
    again = run("index", "rebuild", "--full", "--source", str(kb), "--config", cfg)
    assert "full (full rebuild requested)" in again


def test_rebuild_of_missing_folder_is_one_sentence_and_nonzero_exit(tmp_path: Path) -> None:
    result = runner.invoke(app, ["index", "rebuild", "--config", str(config(tmp_path, tmp_path / "nope"))])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output


def test_eval_retrieval_json_compares_three_modes_per_split_and_category(tmp_path: Path) -> None:
    cfg = str(config(tmp_path, DEMO / "articles"))
    run("index", "rebuild", "--config", cfg)
    report = json.loads(run("eval", "retrieval", "--json", "--qa", str(DEMO / "qa.jsonl"), "--config", cfg))
    assert report["questions"] == 152
    for mode in ("vector", "bm25", "hybrid"):
        assert set(report[mode]) >= {"overall", "train", "heldout", "by_category", "misses"}
        assert report[mode]["heldout"]["questions"] == 50
        assert 0 < report[mode]["overall"]["recall@5"] <= 1 and set(report[mode]["overall"]) >= {"mrr", "ndcg@5"}
    assert len(report["hybrid"]["by_category"]) == 6
    table = run("eval", "retrieval", "--config", cfg, "--qa", str(DEMO / "qa.jsonl"))
    assert "hybrid   heldout" in table and "recall@5" in table


@pytest.mark.slow
def test_demo_hybrid_retrieval_meets_the_quality_bar_with_the_default_embedder(tmp_path: Path) -> None:
    qa = f"  qa_file: {DEMO / 'qa.jsonl'}\n"
    cfg = str(config(tmp_path, DEMO / "articles", embedder="minilm", qa=qa))
    out = run("index", "rebuild", "--config", cfg)
    assert "check    recall@5: passed" in out
    report = json.loads(run("eval", "retrieval", "--json", "--config", cfg))
    hybrid = report["hybrid"]["overall"]
    assert hybrid["recall@5"] >= 0.95 and hybrid["mrr"] >= 0.85
    assert hybrid["mrr"] > report["vector"]["overall"]["mrr"] and hybrid["mrr"] > report["bm25"]["overall"]["mrr"]
