"""A third-party plugin package, pip-installed, is found by name and ordered by the operator's YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from bot.config import Settings
from bot.contracts import Message
from bot.service import Service

EXAMPLE = ROOT / "examples" / "servicebot-refund-guard"


@pytest.fixture()
def installed_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        timeout=300,
    )
    monkeypatch.syspath_prepend(str(target))
    return target


def test_installed_package_guard_runs_in_operator_order(installed_example: Path, demo_service: Service) -> None:
    settings = Settings(
        data_dir=demo_service.settings.data_dir,
        responder="extractive",
        knowledge=demo_service.settings.knowledge,
        guards={"input": ["max_length", {"name": "refund_limit", "config": {"limit": 100}}, "instruction_override"]},
    )
    service = Service.start(settings)
    big = service.ask("I want a refund of €250 for my camera")
    assert big.refused and big.handoff and "member of our team" in big.answer
    assert [v.plugin for v in big.verdicts] == ["max_length", "refund_limit"]
    small = service.ask_messages([Message("user", "can I get a refund of €20 for shipping")])
    assert not small.refused and [v.plugin for v in small.verdicts] == [
        "max_length",
        "refund_limit",
        "instruction_override",
    ]
