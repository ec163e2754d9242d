"""MiniLM with `quantize: int8` (the default): an int8 ONNX graph written once beside the float32 one, vectors
close to float32's, its own embedder id (so an index built with the other setting is rebuilt in full), and a real
index served with it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bot.config import Settings
from bot.service import Service
from knowledge.embedder import SentenceTransformerEmbedder
from tests.conftest import DEMO

TEXTS = [
    "To reset your password, open Settings, then Security, and choose Reset password.",
    "Parcels ship within two working days; tracking links arrive by e-mail.",
    "how do I kill all my sessions on other phones",
    "Refunds reach your card within 5 to 10 working days after the return is received. " * 6,
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def embedders(cache: Path) -> tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder]:
    mp = pytest.MonkeyPatch()
    mp.setenv("SERVICEBOT_MODEL_CACHE", str(cache))
    try:
        full = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config(quantize="none"))
        int8 = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config())  # int8 is the default
        return full, int8
    finally:
        mp.undo()


def test_int8_vectors_are_close_to_float32_and_keep_their_meaning(
    embedders: tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder],
) -> None:
    full, int8 = embedders
    a, b = np.array(full.embed_documents(TEXTS)), np.array(int8.embed_documents(TEXTS))
    assert b.shape == a.shape == (len(TEXTS), 384) and int8.dimension == 384
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.min() > 0.97, cos  # close, not equal: the weights really are int8
    assert not np.allclose(a, b, atol=1e-4)
    q = np.array(int8.embed_query("I forgot my password, how do I change it?"))
    assert q @ b[0] > q @ b[1] + 0.1
    assert int8.embed_documents(TEXTS[:1]) == int8.embed_documents(TEXTS[:1])


def test_the_int8_graph_is_written_once_and_has_its_own_embedder_id(
    embedders: tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder],
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full, int8 = embedders
    assert full.id == "all-MiniLM-L6-v2" and int8.id == "all-MiniLM-L6-v2+int8"
    graphs = list((cache / "onnx").glob("*.onnx"))
    quantized = next(p for p in graphs if p.name.endswith("-int8.onnx"))
    source = quantized.with_name(quantized.name.replace("-int8.onnx", ".onnx"))
    assert sorted(graphs) == sorted([source, quantized])
    assert quantized.stat().st_size < 0.5 * source.stat().st_size  # int8 weights: about a quarter of the bytes
    stamp = quantized.stat().st_mtime_ns
    monkeypatch.setenv("SERVICEBOT_MODEL_CACHE", str(cache))
    again = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config())
    assert quantized.stat().st_mtime_ns == stamp  # read back, not written again
    assert again.embed_documents(TEXTS) == int8.embed_documents(TEXTS)


def test_the_torch_backend_runs_float32_and_says_so(
    embedders: tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder],
) -> None:
    torch = SentenceTransformerEmbedder(SentenceTransformerEmbedder.Config(backend="torch"))
    assert torch.id == "all-MiniLM-L6-v2"  # the float32 id: its vectors are float32's, not int8's
    a, b = np.array(torch.embed_documents(TEXTS)), np.array(embedders[0].embed_documents(TEXTS))
    assert np.allclose(a, b, atol=1e-4)


def test_an_index_built_in_float32_is_rebuilt_in_full_for_int8_and_answers(tmp_path: Path) -> None:
    def start(quantize: str) -> Service:
        settings = Settings(
            data_dir=tmp_path,
            responder="extractive",
            embedder={"name": "minilm", "config": {"quantize": quantize}},
            knowledge={"source": DEMO / "articles"},
        )
        return Service.start(settings, warm=False)

    first = start("none").index.rebuild(DEMO / "articles")
    assert first.switched and first.embedded == first.chunks
    service = start("int8")
    report = service.index.rebuild(DEMO / "articles")
    assert report.switched and report.full and report.embedded == report.chunks  # no float32 vector reused
    assert service.index.status()["embedder"] == "all-MiniLM-L6-v2+int8"
    reply = service.ask("how do I reset my password")
    assert reply.sources and "password" in (reply.sources[0].text + reply.answer).lower()


def test_quantising_prints_no_advice_users_cannot_act_on(
    embedders: tuple[SentenceTransformerEmbedder, SentenceTransformerEmbedder],
    cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from knowledge.onnx_encoder import _quantize

    source = next(p for p in (cache / "onnx").glob("*.onnx") if not p.name.endswith("-int8.onnx"))
    with caplog.at_level(logging.INFO):
        _quantize(source, tmp_path / "again-int8.onnx")
    assert (tmp_path / "again-int8.onnx").stat().st_size > 1_000_000
    assert "pre-processing" not in caplog.text
    assert not logging.getLogger().filters  # the filter is gone afterwards
