"""Index lifecycle on a real embedded Chroma: incremental builds, diff, checks, rollback, retention, embedder guard."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bot.errors import ServicebotError
from knowledge.build import Checks
from knowledge.embedder import HashingEmbedder
from knowledge.hybrid import hybrid_search
from knowledge.plan import Limits
from knowledge.store import KnowledgeStore

DOCS = {
    "reset.md": "---\nid: reset\ntitle: Reset a password\ncategory: accounts\n---\n# Reset a password\n\n"
    "## Request a link\n\nTap Forgot password and we email a reset link valid for thirty minutes.\n\n"
    "## New password\n\nChoose at least ten characters including a number.\n",
    "ship.md": "---\nid: ship\ntitle: Shipping costs\ncategory: orders\n---\n# Shipping costs\n\n"
    "Standard shipping costs 4.95 and takes three to five working days.\n",
    "plug.md": "---\nid: plug\ntitle: Plug blinking red\ncategory: devices\n---\n# Plug blinking red\n\n"
    "A red blinking plug lost its wifi connection; hold the button for ten seconds to pair again.\n",
}


def write_kb(root: Path, docs: dict[str, str] = DOCS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        (root / name).write_text(text)
    return root


def make_store(tmp: Path, dim: int = 256, **limits: int) -> KnowledgeStore:
    return KnowledgeStore(tmp / "index", "kb", HashingEmbedder(HashingEmbedder.Config(dimension=dim)), Limits(**limits))


def top_doc(store: KnowledgeStore, query: str) -> str:
    return hybrid_search(store.view(), store.embedder, query, 1)[0].doc_id


def all_text(store: KnowledgeStore, query: str) -> str:
    return " ".join(p.text for p in hybrid_search(store.view(), store.embedder, query, 10))


def test_incremental_rebuild_embeds_only_changes_and_drops_stale_chunks(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    first = store.rebuild([kb])
    assert first.switched and first.full and first.embedded == first.chunks == 4
    (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95 and takes three to five", "6.50 and takes two"))
    (kb / "plug.md").unlink()
    (kb / "cam.md").write_text("# Camera offline\n\nA camera shows offline when its battery is below five percent.\n")
    diff = store.diff([kb])
    assert (diff.added, diff.changed, diff.deleted, diff.unchanged) == (("cam",), ("ship",), ("plug",), 1)
    assert store.current_version() == first.version  # diff builds nothing
    second = store.rebuild([kb])
    assert second.switched and not second.full and second.embedded == 2  # one chunk each for cam and ship
    assert store.status()["chunks"] == 4 and store.status()["segments"] == 2
    assert "6.50" in all_text(store, "shipping cost") and "4.95" not in all_text(store, "shipping cost")
    assert "plug" not in {p.doc_id for p in hybrid_search(store.view(), store.embedder, "red blinking plug", 10)}
    assert top_doc(store, "camera offline battery") == "cam"


def test_rebuild_without_changes_switches_nothing_even_after_touching_files(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    version = store.rebuild([kb]).version
    future = time.time() + 100
    os.utime(kb / "reset.md", (future, future))
    report = store.rebuild([kb])
    assert not report.switched and report.reason == "nothing changed" and store.current_version() == version
    assert report.unchanged == 3 and report.embedded == 0


def test_changed_embedder_is_refused_at_query_time_and_forces_a_full_rebuild(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    make_store(tmp_path, dim=256).rebuild([kb])
    other = make_store(tmp_path, dim=128)
    with pytest.raises(ServicebotError, match=r"built with embedder 'hashing-256' \(256 dimensions\)"):
        other.view()
    assert other.diff([kb]).reason == "embedder changed from 'hashing-256' to 'hashing-128'"
    report = other.rebuild([kb])
    assert report.full and report.embedded == 4 and top_doc(other, "shipping costs") == "ship"


def test_changed_chunking_rechunks_everything_reusing_unchanged_vectors(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    make_store(tmp_path).rebuild([kb])
    report = make_store(tmp_path, chunk_size=100, chunk_overlap=10).rebuild([kb])
    assert report.full and report.reason == "chunking settings changed" and report.switched
    assert report.embedded == 0  # every chunk's text is unchanged, so its stored vector is reused


def test_rollback_serves_the_previous_version_and_refuses_past_the_first(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    first = store.rebuild([kb]).version
    (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95", "9.99"))
    store.rebuild([kb])
    assert "9.99" in all_text(store, "shipping costs")
    assert store.rollback() == first
    assert "4.95" in all_text(store, "shipping costs") and store.status()["history"] == []
    with pytest.raises(ServicebotError, match="no earlier index version"):
        store.rollback()


def test_old_versions_and_their_segments_are_pruned_by_retention(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    store.builder.checks = Checks(retain=2)
    for price in ("1.00", "2.00", "3.00", "4.00"):
        (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95", price))
        store.rebuild([kb])
    retained = store.versions.retained()
    assert len(retained) == 2 and store.versions.on_disk() == sorted(retained)
    used = {s for v in retained for s in store.versions.load(v).segments}
    assert set(store.segments.names("kb.v")) == used


def test_too_many_segments_compacts_into_one(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path, max_segments=2)
    store.rebuild([kb])
    (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95", "5.95"))
    assert not store.rebuild([kb]).full
    (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95", "6.95"))
    report = store.rebuild([kb])
    assert report.full and report.reason.startswith("compacting") and report.embedded == 1  # the rest is copied
    assert store.status()["segments"] == 1 and "6.95" in all_text(store, "shipping costs")


def test_a_failed_recall_check_keeps_the_serving_version(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    recall = {"value": 0.9}
    store.set_recall(lambda version: (recall["value"], "qa1"), margin=0.05, retain=3)
    first = store.rebuild([kb])
    assert ("recall@5", True, "0.900 (no serving version), margin 0.05") in first.checks
    (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95", "7.95"))
    recall["value"] = 0.86  # within the margin
    assert store.rebuild([kb]).switched
    (kb / "ship.md").write_text(DOCS["ship.md"].replace("4.95", "8.95"))
    recall["value"] = 0.5
    before = store.current_version()
    with pytest.raises(ServicebotError, match=r"failed the check 'recall@5' \(0.500 vs serving 0.860"):
        store.rebuild([kb])
    assert store.current_version() == before and "7.95" in all_text(store, "shipping costs")
    assert set(store.segments.names("kb.v")) == {
        s for v in store.versions.retained() for s in store.versions.load(v).segments
    }


def test_missing_folder_or_nothing_indexable_leaves_the_index_alone(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    version = store.rebuild([kb]).version
    with pytest.raises(ServicebotError, match="does not exist"):
        store.rebuild([tmp_path / "gone"])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.md").write_bytes(b"\x00\x01")
    with pytest.raises(ServicebotError, match="No indexable documents"):
        store.rebuild([junk])
    assert store.current_version() == version and top_doc(store, "reset link password") == "reset"


def test_only_one_rebuild_runs_at_a_time_and_status_says_so(tmp_path: Path) -> None:
    kb = write_kb(tmp_path / "kb")
    store = make_store(tmp_path)
    with store.versions.lock():
        assert store.status()["rebuilding"] == f"pid {os.getpid()}"
        with pytest.raises(ServicebotError, match="Another rebuild of 'kb' is running"):
            make_store(tmp_path).rebuild([kb])
    assert store.status()["rebuilding"] is None and store.rebuild([kb]).switched


def test_several_source_folders_and_duplicate_ids_across_them(tmp_path: Path) -> None:
    a = write_kb(tmp_path / "a")
    b = write_kb(tmp_path / "b", {"other.md": DOCS["reset.md"].replace("ten characters", "twelve characters")})
    report = make_store(tmp_path).rebuild([a, b])
    assert report.documents == 3
    assert ("other.md", "duplicate document id 'reset' (already in reset.md)") in report.skipped
