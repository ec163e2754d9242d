"""The static embedder: distilled from the packaged all-MiniLM-L6-v2 once, cached, and served through a real index."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from bot.config import Settings
from bot.errors import PluginError
from bot.service import Service
from knowledge.static_embedder import StaticEmbedder
from tests.conftest import DEMO


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def static(cache: Path) -> StaticEmbedder:
    mp = pytest.MonkeyPatch()
    mp.setenv("SERVICEBOT_MODEL_CACHE", str(cache))
    try:
        return StaticEmbedder(StaticEmbedder.Config())
    finally:
        mp.undo()


def _tables(cache: Path) -> list[Path]:
    return [p for p in (cache / "static").glob("*.npy") if not p.name.endswith("-tokens.npy")]


def test_vectors_are_unit_length_and_carry_meaning(static: StaticEmbedder) -> None:
    docs = np.array(
        static.embed_documents(
            [
                "To reset your password, open Settings, then Security, and choose Reset password.",
                "Parcels ship within two working days; tracking links arrive by e-mail.",
                "",
            ]
        )
    )
    assert docs.shape == (3, static.dimension) and static.dimension == 256
    assert np.allclose(np.linalg.norm(docs[:2], axis=1), 1.0, atol=1e-5)
    assert not docs[2].any()  # nothing to embed: the zero vector, not NaN
    q = np.array(static.embed_query("I forgot my password, how do I change it?"))
    assert q @ docs[0] > q @ docs[1] + 0.1
    assert static.embed_documents(["same text"]) == static.embed_documents(["same text"])


def test_the_table_is_distilled_once_and_reused(
    static: StaticEmbedder, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEBOT_MODEL_CACHE", str(cache))
    assert len(_tables(cache)) == 1 and len(list((cache / "static").glob("*-tokens.npy"))) == 1
    again = StaticEmbedder(StaticEmbedder.Config())
    assert again.id == static.id and again.id.startswith("static-all-MiniLM-L6-v2-256-")
    assert again.embed_query("refund") == static.embed_query("refund")
    smaller = StaticEmbedder(StaticEmbedder.Config(dimension=64))  # another setting is another table and id
    assert smaller.dimension == 64 and smaller.id != static.id
    assert len(_tables(cache)) == 2  # from the same token vectors: the model ran once
    assert len(list((cache / "static").glob("*-tokens.npy"))) == 1


def test_a_corrupt_cached_table_is_distilled_again(
    static: StaticEmbedder, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEBOT_MODEL_CACHE", str(cache))
    table = next(p for p in _tables(cache) if np.load(p).shape[1] == 256)
    table.write_bytes(b"not a numpy file")
    again = StaticEmbedder(StaticEmbedder.Config())
    assert again.embed_query("refund") == static.embed_query("refund")
    assert np.load(table).shape[1] == 256


def test_a_model_that_is_not_a_local_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="local sentence-transformer folder"):
        StaticEmbedder(StaticEmbedder.Config(model=str(tmp_path / "missing")))


def test_serves_the_demo_knowledge_while_guards_keep_minilm(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICEBOT_MODEL_CACHE", str(cache))
    settings = Settings(
        data_dir=tmp_path / "data",
        responder={"name": "extractive"},
        embedder={"name": "static"},
        guards={"input": ["max_length", "jailbreak"]},
        knowledge={"source": DEMO / "articles"},
    )
    service = Service.start(settings, warm=False)
    report = service.index.rebuild(DEMO / "articles")
    assert report.switched and report.chunks > 100
    assert service.index.status()["embedder"].startswith("static-")
    pipeline = service.pipeline
    assert pipeline.embedder.name == "static"
    assert pipeline.guard_embedder.name == "minilm"  # the learned guards read meaning with what they were measured on
    assert pipeline.input_guards[1]._embedder is pipeline.guard_embedder
    passages = asyncio.run(pipeline.retriever.search("How do I reset my password?", 5))
    assert passages and any("password" in p.text.lower() for p in passages)
