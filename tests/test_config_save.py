"""Console edits are written into the operator's YAML file (comments kept), so they survive a restart; a file
that cannot be written, or that changed on disk meanwhile, is left alone and the operator is told."""

from __future__ import annotations

import html
import os
import re
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import unquote_plus

import httpx
import pytest
from conftest import DEMO
from conftest_web import OPERATOR_PASSWORD

from bot.config import DEFAULT_CONFIG, load_settings
from bot.config_file import save_sections
from bot.errors import ConfigError
from bot.service import Service

pytest_plugins = ["conftest_web"]

CONFIG = """# Our support bot. Ask Dana before changing the guards.
data_dir: {data}
responder: extractive   # no model on this box
knowledge:
  source: {source}
guards:
  input:
    - max_length        # long pastes
    - instruction_override
  output: []
policy:
  refuse_threshold: 0.7  # agreed with legal, 2026-10
  helpfulness_weight: 0.3
"""


def config(tmp_path: Path) -> Path:
    path = tmp_path / "servicebot.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "data", source=DEMO / "articles"))
    path.chmod(0o640)
    return path


def test_only_the_changed_keys_are_rewritten_and_comments_stay(tmp_path: Path) -> None:
    path = config(tmp_path)
    before = load_settings(path)
    policy = before.policy.model_copy(update={"helpfulness_weight": 0.5})
    guards = before.guards.model_copy(update={"input": before.guards.input[:1]})
    after = before.model_copy(update={"policy": policy, "guards": guards})

    save_sections(path, before, after, ["policy", "guards"])

    text = path.read_text()
    assert "# Our support bot. Ask Dana before changing the guards." in text
    assert "responder: extractive   # no model on this box" in text
    assert "refuse_threshold: 0.7  # agreed with legal, 2026-10" in text  # untouched key, comment and all
    assert "helpfulness_weight: 0.5" in text and "instruction_override" not in text
    assert "max_length" in text and "output: []" in text
    reloaded = load_settings(path)
    assert reloaded.policy == policy and [g.name for g in reloaded.guards.input] == ["max_length"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["servicebot.yaml"]  # no temporary file left beside it


def test_a_file_that_is_not_a_mapping_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = config(tmp_path)
    before = load_settings(path)
    after = before.model_copy(update={"policy": before.policy.model_copy(update={"refuse_threshold": 0.9})})
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="does not hold a mapping"):
        save_sections(path, before, after, ["policy"])
    path.write_text("guards: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        save_sections(path, before, after, ["policy"])
    assert path.read_text() == "guards: [unclosed\n"


def test_a_console_edit_survives_a_restart_and_is_audited(
    tmp_path: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    path = config(tmp_path)
    service = Service.start(load_settings(path), warm=False, config_path=path)
    service.index.rebuild(DEMO / "articles")
    with serve(service) as url:
        client = httpx.Client(base_url=url, timeout=60)
        client.post("/console/login", data={"user": "dana", "password": OPERATOR_PASSWORD, "next": "/console/"})
        token = re.search(r"name=csrf value='([0-9a-f]+)'", client.get("/console/plugins").text)
        assert token
        data = {"stage": "input", "index": "1", "name": "instruction_override", "csrf": token.group(1)}
        response = client.post("/console/plugins/disable", data=data)
        assert response.status_code == 303
        assert f"Saved to {path}." in unquote_plus(response.headers["location"])
        assert [g.name for g in service.settings.guards.input] == ["max_length"]  # live
        service.maybe_reload()  # our own write is not mistaken for an operator's edit
        assert service.records is not None
        actions = [e["action"] for e in service.records.audit_log()]
        assert actions[:2] == ["saved", "apply"] and actions.count("apply") == 1

    restarted = Service.start(load_settings(path), warm=False, config_path=path)
    assert [g.name for g in restarted.settings.guards.input] == ["max_length"]
    assert "refuse_threshold: 0.7  # agreed with legal, 2026-10" in path.read_text()


def test_a_file_changed_on_disk_meanwhile_is_not_overwritten(tmp_path: Path) -> None:
    path = config(tmp_path)
    service = Service.start(load_settings(path), warm=False, config_path=path)
    before = service.settings
    service.apply(
        before.model_copy(update={"policy": before.policy.model_copy(update={"helpfulness_weight": 0.6})}), "test"
    )
    theirs = path.read_text().replace("refuse_threshold: 0.7", "refuse_threshold: 0.8")
    path.write_text(theirs)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a distinct mtime even on coarse clocks
    message = service.save(before, ["policy"], "test")
    assert message.startswith("Not saved:") and "changed on disk meanwhile" in message
    assert path.read_text() == theirs
    service.maybe_reload()  # the operator's file wins at the next turn
    assert service.settings.policy.refuse_threshold == 0.8


def test_without_a_config_file_or_when_it_is_gone_the_change_stays_live_and_the_operator_is_told(
    tmp_path: Path,
) -> None:
    path = config(tmp_path)
    built_in = Service.start(load_settings(path), warm=False)
    before = built_in.settings
    built_in.apply(
        before.model_copy(update={"policy": before.policy.model_copy(update={"refuse_threshold": 0.9})}), "t"
    )
    assert "runs on the built-in config" in built_in.save(before, ["policy"], "t")
    assert built_in.settings.policy.refuse_threshold == 0.9
    packaged = DEFAULT_CONFIG.read_bytes()  # `bot serve` without --config reloads the packaged file: never edited
    defaults = Service.start(load_settings(path), warm=False, config_path=DEFAULT_CONFIG)
    before = defaults.settings
    defaults.settings = before.model_copy(update={"policy": before.policy.model_copy(update={"refuse_threshold": 0.9})})
    assert "runs on the built-in config" in defaults.save(before, ["policy"], "t")
    assert DEFAULT_CONFIG.read_bytes() == packaged

    service = Service.start(load_settings(path), warm=False, config_path=path)
    before = service.settings
    service.apply(before.model_copy(update={"policy": before.policy.model_copy(update={"refuse_threshold": 0.9})}), "t")
    path.unlink()
    message = html.unescape(service.save(before, ["policy"], "t"))
    assert message.startswith("Not saved:") and "cannot be read" in message
    assert service.settings.policy.refuse_threshold == 0.9


def test_guard_list_edits_keep_each_remaining_guards_line_and_comment(tmp_path: Path) -> None:
    path = tmp_path / "servicebot.yaml"
    path.write_text(DEFAULT_CONFIG.read_text())
    before = load_settings(path)
    guards = [g for g in before.guards.input if g.name != "instruction_override"]
    guards[2], guards[3] = guards[3], guards[2]  # move one up
    guards = [g.model_copy(update={"config": {"threshold": 0.66}}) if g.name == "harmful_intent" else g for g in guards]
    after = before.model_copy(update={"guards": before.guards.model_copy(update={"input": guards})})

    save_sections(path, before, after, ["guards"])

    old_lines, new_lines = DEFAULT_CONFIG.read_text().splitlines(), path.read_text().splitlines()
    gone = [line for line in old_lines if line not in new_lines]
    assert [line.split("#")[0].strip() for line in gone] == ["- instruction_override", "config: {threshold: 0.7}"]
    assert any(line.startswith("      config: {threshold: 0.66}  # chosen on the tune split") for line in new_lines)
    assert len(new_lines) == len(old_lines) - 1
    assert load_settings(path) == after
