"""Knowledge: loading, heading-aware chunking, and a real Chroma index in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ServicebotError
from bot.service import Service
from knowledge.chunking import chunk_document
from knowledge.documents import load_folder

ARTICLE = """---
id: {id}
title: {title}
category: accounts-security
tags: [a, b]
---
# {title}

## First part

{body}

## Second part

More words about the second part of {title}.
"""


def make_kb(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "reset.md").write_text(
        ARTICLE.format(id="reset", title="Reset a password", body="Open Settings > Security and choose Reset password.")
    )
    (root / "ship.md").write_text(
        ARTICLE.format(id="ship", title="Shipping costs", body="Standard shipping costs 4.95 and takes 3 to 5 days.")
    )
    (root / "binary.md").write_bytes(b"\x00\x01\x02binary")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


def test_loader_reports_unreadable_files_instead_of_failing(tmp_path: Path) -> None:
    docs, skipped = load_folder(make_kb(tmp_path / "kb"))
    assert sorted(d.id for d in docs) == ["reset", "ship"]
    reasons = {s.source: s.reason for s in skipped}
    assert reasons["binary.md"] == "binary file"
    assert reasons["latin1.txt"].startswith("not UTF-8")
    assert "unsupported file type" in reasons["image.png"]


def test_chunks_keep_title_and_heading_trail(tmp_path: Path) -> None:
    docs, _ = load_folder(make_kb(tmp_path / "kb"))
    chunks = chunk_document(next(d for d in docs if d.id == "reset"), size=200, overlap=20)
    assert [c.metadata["section"] for c in chunks] == ["First part", "Second part"]
    assert chunks[0].text.startswith("Reset a password — First part\n")
    assert chunks[0].metadata["tags"] == "a,b" and chunks[0].metadata["doc_id"] == "reset"


@pytest.fixture()
def service(tmp_path: Path) -> Service:
    return Service.start(Settings(data_dir=tmp_path / "data", responder="extractive"), warm=False)


async def test_rebuild_then_search_finds_the_right_document(tmp_path: Path, service: Service) -> None:
    report = service.index.rebuild(make_kb(tmp_path / "kb"))
    assert report.documents == 2 and report.chunks == 4 and len(report.skipped) == 3
    status = service.index.status()
    assert status["built"] and status["chunks"] == 4 and status["embedder"] == "all-MiniLM-L6-v2+int8"
    passages = await service.pipeline.retriever.search("how much is delivery", k=2)
    assert passages[0].doc_id == "ship" and passages[0].title == "Shipping costs" and passages[0].score > 0.2


async def test_failed_rebuild_keeps_the_serving_index(tmp_path: Path, service: Service) -> None:
    service.index.rebuild(make_kb(tmp_path / "kb"))
    before = service.index.status()["version"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "junk.bin").write_bytes(b"\x00")
    with pytest.raises(ServicebotError, match="No indexable documents"):
        service.index.rebuild(empty)
    assert service.index.status()["version"] == before
    assert (await service.pipeline.retriever.search("reset password", k=1))[0].doc_id == "reset"


async def test_running_retriever_follows_a_rebuild_without_restart(tmp_path: Path, service: Service) -> None:
    kb = make_kb(tmp_path / "kb")
    service.index.rebuild(kb)
    assert (await service.pipeline.retriever.search("warranty claim", k=1))[0].doc_id != "warranty"
    (kb / "warranty.md").write_text(
        ARTICLE.format(
            id="warranty", title="Warranty claims", body="Devices carry a two-year warranty; claim it in the app."
        )
    )
    other = Service.start(service.settings, warm=False)  # ops rebuilds from another process
    other.index.rebuild(kb)
    assert (await service.pipeline.retriever.search("warranty claim", k=1))[0].doc_id == "warranty"


def test_search_before_any_build_is_a_clear_error(service: Service) -> None:
    with pytest.raises(ServicebotError, match="has not been built yet"):
        service.warm()


def test_index_built_with_another_embedder_is_refused(tmp_path: Path, service: Service) -> None:
    service.index.rebuild(make_kb(tmp_path / "kb"))
    alias = service.settings.index_dir / "kb.alias.json"
    version = json.loads(alias.read_text())["version"]
    col = service.index.store.client.get_collection(version)  # type: ignore[attr-defined]
    col.modify(metadata={**col.metadata, "embedder": "some-other-model"})
    fresh = Service.start(service.settings, warm=False)
    with pytest.raises(ServicebotError, match="built with embedder 'some-other-model'"):
        fresh.warm()
