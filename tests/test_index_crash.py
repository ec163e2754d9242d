"""Crash safety and zero downtime with real processes: SIGKILL a rebuild at several points; query during rebuilds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from knowledge.embedder import HashingEmbedder
from knowledge.hybrid import hybrid_search
from knowledge.store import KnowledgeStore

ROOT = Path(__file__).resolve().parent.parent
REBUILD = """
import logging, sys
from pathlib import Path
from knowledge.embedder import HashingEmbedder
from knowledge.store import KnowledgeStore
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
store = KnowledgeStore(Path(sys.argv[1]), "kb", HashingEmbedder(HashingEmbedder.Config()))
store.rebuild([Path(sys.argv[2])], full=sys.argv[3] == "full", progress=lambda d, t: print(f"progress {d}/{t}"))
print("done")
"""


def write_corpus(root: Path, docs: int, tag: str) -> Path:
    """`docs` documents of three sections each; `tag` changes every document's wording."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(docs):
        sections = "\n\n".join(
            f"## Part {j}\n\nArticle {i} part {j} explains topic{i} in {tag} words." for j in range(3)
        )
        (root / f"doc{i:04d}.md").write_text(f"# Topic {i}\n\n{sections}\n")
    return root


def store_at(index: Path) -> KnowledgeStore:
    return KnowledgeStore(index, "kb", HashingEmbedder(HashingEmbedder.Config()))


def start_rebuild(index: Path, kb: Path, full: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-u", "-c", REBUILD, str(index), str(kb), "full" if full else "incremental"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def kill_when(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """SIGKILL the rebuild as soon as it prints a line starting with `marker`."""
    seen: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line.strip())
        if line.startswith(marker):
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    return seen


@pytest.mark.slow
@pytest.mark.parametrize("marker", ["stage write", "progress 512/", "stage bm25", "stage manifest", "stage checks"])
def test_kill_minus_9_mid_rebuild_leaves_serving_version_intact_and_next_build_recovers(
    tmp_path: Path, marker: str
) -> None:
    index = tmp_path / "index"
    kb = write_corpus(tmp_path / "kb", 300, "old")
    store = store_at(index)
    serving = store.rebuild([kb]).version
    write_corpus(kb, 300, "new")
    seen = kill_when(start_rebuild(index, kb), marker)
    assert seen[-1].startswith(marker) and "done" not in seen
    fresh = store_at(index)  # what a server (re)starting now would serve
    assert fresh.current_version() == serving
    passages = hybrid_search(fresh.view(), fresh.embedder, "topic7 old words", 3)
    assert passages[0].doc_id == "doc0007" and "old words" in passages[0].text
    report = fresh.rebuild([kb])  # cleans up (and reuses what the killed build had embedded)
    assert report.switched and report.chunks == 900
    assert "new words" in hybrid_search(fresh.view(), fresh.embedder, "topic7 new words", 1)[0].text
    retained = fresh.versions.retained()
    assert set(fresh.segments.names("kb.v")) == {s for v in retained for s in fresh.versions.load(v).segments}
    assert fresh.versions.on_disk() == sorted(retained)


@pytest.mark.slow
def test_killed_full_rebuild_is_resumed_from_its_stored_vectors(tmp_path: Path) -> None:
    index = tmp_path / "index"
    kb = write_corpus(tmp_path / "kb", 300, "old")
    store_at(index).rebuild([kb])
    kill_when(start_rebuild(index, kb, full=True), "progress 768/")
    report = store_at(index).rebuild([kb], full=True)
    assert report.switched and report.chunks == 900 and report.embedded <= 900 - 768


@pytest.mark.slow
def test_queries_never_fail_while_another_process_rebuilds_and_the_new_version_is_picked_up(tmp_path: Path) -> None:
    index = tmp_path / "index"
    kb = write_corpus(tmp_path / "kb", 300, "old")
    server = store_at(index)
    first = server.rebuild([kb]).version
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                assert hybrid_search(server.view(), server.embedder, "topic12 words", 3)
                answered[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts
                failures.append(repr(exc))

    reader = threading.Thread(target=load)
    reader.start()
    try:
        for tag in ("new", "newer"):
            write_corpus(kb, 300, tag)
            proc = start_rebuild(index, kb, full=tag == "newer")
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
    finally:
        stop.set()
        reader.join()
    assert failures == [] and answered[0] > 10
    assert server.current_version() != first
    assert "newer words" in hybrid_search(server.view(), server.embedder, "topic12 newer words", 1)[0].text
