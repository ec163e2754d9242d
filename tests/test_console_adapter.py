"""The operator console's adapter switch over real HTTP: a tiny Llama with a LoRA adapter, switched live, audited."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from conftest import DEMO
from conftest_web import OPERATOR_PASSWORD

from bot.config import GuardsSettings, KnowledgeSettings, PluginSpec, Settings
from bot.service import Service

pytest_plugins = ["conftest_web"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Service:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    data = tmp_path_factory.mktemp("adapter-console")
    kb = data / "kb"  # two articles: the index is not what this test is about
    kb.mkdir()
    for name in ("reset-password.md", "camera-offline.md"):
        (kb / name).write_text((DEMO / "articles" / name).read_text(encoding="utf-8"), encoding="utf-8")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(str(data / "adapters" / "kind"))
    settings = Settings(
        data_dir=data,
        responder=PluginSpec(name="hf", config={"model": str(tiny_llama), "adapter": None, "max_new_tokens": 4}),
        guards=GuardsSettings(input=[PluginSpec(name="max_length")]),
        knowledge=KnowledgeSettings(source=kb),
    )
    service = Service.start(settings, warm=False)
    service.index.rebuild(kb)
    return service


@pytest.fixture(scope="module")
def url(adapted: Service, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve(adapted) as base:
        yield base


def test_operator_switches_the_adapter_from_the_console_and_it_is_audited(url: str, adapted: Service) -> None:
    client = httpx.Client(base_url=url, timeout=60)
    client.post("/console/login", data={"user": "alice", "password": OPERATOR_PASSWORD, "next": "/console/"})
    page = client.get("/console/plugins").text
    assert "<option value='kind'>kind</option>" in page
    token = re.findall(r"name=csrf value='([0-9a-f]+)'", page)[0]
    switched = client.post("/console/adapter", data={"csrf": token, "name": "kind"})
    assert "ok=" in switched.headers["location"]
    assert [a["name"] for a in adapted.adapters() if a["active"]] == ["kind"]
    assert "<option value='kind' selected>kind</option>" in client.get("/console/plugins").text
    missing = client.post("/console/adapter", data={"csrf": token, "name": "no-such-adapter"})
    assert "error=" in missing.headers["location"]
    assert [a["name"] for a in adapted.adapters() if a["active"]] == ["kind"]  # the serving one stays
    client.post("/console/adapter", data={"csrf": token, "name": ""})
    assert not any(a["active"] for a in adapted.adapters())
    audit = adapted.records.audit_log() if adapted.records else []
    assert [(e["actor"], e["detail"]["after"]) for e in audit if e["action"] == "adapter"][:2] == [
        ("console:alice", None),
        ("console:alice", "kind"),
    ]
