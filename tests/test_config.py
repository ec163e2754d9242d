"""Config: YAML plus environment overrides, and one clear sentence for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Settings, load_settings
from bot.errors import ConfigError, PluginError
from bot.service import build_pipeline


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "servicebot.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_defaults_load_with_the_ordered_guard_suite() -> None:
    settings = load_settings()
    names = [g.name for g in settings.guards.input]
    assert names[:3] == ["max_length", "pii", "obfuscation"]  # redaction and decoding come before the classifiers
    assert {"jailbreak", "harmful_intent", "handoff", "topical"} <= set(names)
    assert [g.name for g in settings.guards.passages] == ["injection"]
    assert settings.responder.name == "hf" and settings.server.host == "127.0.0.1"


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'servr': unknown key"):
        load_settings(write(tmp_path, "servr:\n  port: 1\n"))


def test_nested_typo_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'knowledge.kk': unknown key"):
        load_settings(write(tmp_path, "knowledge:\n  kk: 3\n"))


def test_wrong_type_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'server.port'"):
        load_settings(write(tmp_path, "server:\n  port: eighty\n"))


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(write(tmp_path, "server:\n  port: [1,\n"))


def test_missing_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICEBOT_SERVER__PORT", "9123")
    settings = load_settings(write(tmp_path, "server:\n  port: 8000\n  host: 127.0.0.1\n"))
    assert settings.server.port == 9123 and settings.server.host == "127.0.0.1"


def test_values_passed_in_code_beat_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A test or benchmark that picks its own data folder keeps it when an operator exported SERVICEBOT_DATA_DIR;
    # the environment still beats the YAML file, and fills what code leaves out.
    monkeypatch.setenv("SERVICEBOT_DATA_DIR", str(tmp_path / "operators"))
    monkeypatch.setenv("SERVICEBOT_SERVER__PORT", "9123")
    settings = Settings(data_dir=tmp_path / "mine", responder="extractive")
    assert settings.data_dir == tmp_path / "mine" and settings.server.port == 9123
    from_file = load_settings(write(tmp_path, "data_dir: from-yaml\nserver:\n  host: 127.0.0.1\n"))
    assert from_file.data_dir == tmp_path / "operators" and from_file.server.host == "127.0.0.1"
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(write(tmp_path, "data_dri: x\n"))
    assert Settings().data_dir == tmp_path / "operators"  # the file's values do not linger


def test_unknown_plugin_name_is_named(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, responder="extractive", guards={"input": ["max_lenght"]})
    with pytest.raises(PluginError, match=r"Unknown guard plugin 'max_lenght' \(installed: .*max_length"):
        build_pipeline(settings)


def test_plugin_config_typo_names_plugin_and_key(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        responder="extractive",
        guards={"input": [{"name": "max_length", "config": {"max_charz": 5}}]},
    )
    with pytest.raises(PluginError, match=r"guard plugin 'max_length'.*'max_charz': unknown key"):
        build_pipeline(settings)


def test_output_stage_requires_an_output_guard(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, responder="extractive", guards={"output": ["max_length"]})
    with pytest.raises(PluginError, match="cannot check output"):
        build_pipeline(settings)
