"""Operators switch the responder's adapter live: by an action (audited) or by editing the YAML."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import DEMO

from bot.config import load_settings
from bot.errors import PluginError
from bot.service import Service

CONFIG = """data_dir: {data}
responder:
  name: hf
  config: {{model: {model}, adapter: {adapter}, max_new_tokens: 4}}
guards: {{input: [max_length]}}
knowledge: {{source: {source}}}
"""


def make_lora(base: Path, out: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(out)


def write(cfg: Path, data: Path, model: Path, adapter: str) -> None:
    cfg.write_text(CONFIG.format(data=data, model=model, adapter=adapter, source=DEMO / "articles"))
    stat = cfg.stat()
    os.utime(cfg, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.fixture()
def service(tmp_path: Path, tiny_llama: Path) -> Service:
    data = tmp_path / "data"
    make_lora(tiny_llama, data / "adapters" / "kind")
    broken = data / "adapters" / "broken"
    broken.mkdir(parents=True)
    (broken / "adapter_config.json").write_text("{not json")
    cfg = tmp_path / "servicebot.yaml"
    write(cfg, data, tiny_llama, "null")
    service = Service.start(load_settings(cfg), warm=False, config_path=cfg)
    service.index.rebuild(DEMO / "articles")
    return service


def test_an_operator_switches_the_adapter_live_and_the_switch_is_audited(service: Service) -> None:
    names = {a["name"]: a for a in service.adapters()}
    assert set(names) >= {"kind"} and not names["kind"]["active"]
    responder = service.pipeline.responder
    service.use_adapter("kind", actor="operator alice")
    assert service.pipeline.responder is responder  # no reload of the model, no restart
    assert service.settings.responder.config["adapter"] == "kind"
    assert [a["name"] for a in service.adapters() if a["active"]] == ["kind"]
    assert service.ask("I forgot my password").answer  # still answering
    service.use_adapter(None, actor="operator alice")
    assert not any(a["active"] for a in service.adapters())
    assert service.records is not None
    switches = [e for e in service.records.audit_log() if e["action"] == "adapter"]  # newest first
    assert [(e["actor"], e["detail"]["after"]) for e in switches[:2]] == [
        ("operator alice", None),
        ("operator alice", "kind"),
    ]


def test_a_corrupt_or_missing_adapter_is_refused_and_the_serving_one_stays(service: Service) -> None:
    service.use_adapter("kind", actor="test")
    for bad in ("broken", "no-such-adapter"):
        with pytest.raises(PluginError):
            service.use_adapter(bad, actor="test")
    assert service.settings.responder.config["adapter"] == "kind"
    assert [a["name"] for a in service.adapters() if a["active"]] == ["kind"]


def test_editing_only_the_adapter_in_the_yaml_switches_it_without_reloading_the_model(
    service: Service, tmp_path: Path, tiny_llama: Path
) -> None:
    responder = service.pipeline.responder
    assert service.config_path is not None
    write(service.config_path, tmp_path / "data", tiny_llama, "kind")
    service.ask("hello")  # a turn notices the edited file
    assert service.pipeline.responder is responder
    assert [a["name"] for a in service.adapters() if a["active"]] == ["kind"]


def test_bot_adapters_lists_them_and_a_responder_without_adapters_is_one_sentence(
    service: Service, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from bot.cli import app

    assert service.config_path is not None
    listed = CliRunner().invoke(app, ["adapters", "--json", "--config", str(service.config_path)])
    assert listed.exit_code == 0, listed.output
    assert "kind" in [a["name"] for a in json.loads(listed.stdout)]
    plain = tmp_path / "plain.yaml"
    plain.write_text(f"data_dir: {tmp_path / 'data'}\nresponder: extractive\n")
    refused = CliRunner().invoke(app, ["adapters", "--config", str(plain)])
    assert refused.exit_code == 2 and "does not use adapters" in refused.output
