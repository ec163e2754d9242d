"""Scale-out: the same lifecycle against a real `chroma run` server on 127.0.0.1 (knowledge.store: http)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import Settings
from bot.errors import ServicebotError
from bot.service import Service
from knowledge.chroma import TOKEN_ENV, connect
from knowledge.embedder import HashingEmbedder
from knowledge.hybrid import hybrid_search
from knowledge.store import KnowledgeStore

DOC = "---\nid: {id}\ntitle: {title}\n---\n# {title}\n\n{body}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real Chroma server process (the `chroma` CLI shipped with chromadb) on a free port."""
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    data = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while True:
        try:
            connect(data, "http", "127.0.0.1", port).heartbeat()
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("chroma server did not start") from None
            time.sleep(0.3)
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def write(kb: Path, doc_id: str, title: str, body: str) -> None:
    kb.mkdir(parents=True, exist_ok=True)
    (kb / f"{doc_id}.md").write_text(DOC.format(id=doc_id, title=title, body=body))


def test_lifecycle_against_a_chroma_server(tmp_path: Path, chroma_server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")  # sent as a bearer token; this local server does not check it
    kb = tmp_path / "kb"
    write(kb, "ship", "Shipping costs", "Standard shipping costs 4.95.")
    write(kb, "reset", "Reset a password", "Tap Forgot password to get a reset link.")
    store = KnowledgeStore(
        tmp_path / "local", "kbhttp", HashingEmbedder(HashingEmbedder.Config()), store="http", port=chroma_server
    )
    first = store.rebuild([kb])
    assert first.switched and first.chunks == 2 and store.status()["store"] == "http"
    write(kb, "ship", "Shipping costs", "Standard shipping costs 6.50 now.")
    second = store.rebuild([kb])
    assert second.embedded == 1 and not second.full
    top = hybrid_search(store.view(), store.embedder, "shipping costs", 1)[0]
    assert top.doc_id == "ship" and "6.50" in top.text
    names = {c.name for c in store.client.list_collections()}
    assert {first.version, second.version} <= names  # the vectors live in the server, not in tmp_path
    assert not list((tmp_path / "local").glob("*.sqlite3"))
    assert store.rollback() == first.version
    assert "4.95" in hybrid_search(store.view(), store.embedder, "shipping", 1)[0].text


def test_http_store_is_selected_by_settings(tmp_path: Path, chroma_server: int) -> None:
    write(tmp_path / "kb", "ship", "Shipping costs", "Standard shipping costs 4.95.")
    settings = Settings(
        data_dir=tmp_path / "data",
        embedder="hashing",
        responder="extractive",
        knowledge={"store": "http", "chroma_port": chroma_server, "collection": "viasettings"},
    )
    service = Service.start(settings, warm=False)
    service.index.rebuild(tmp_path / "kb")
    assert service.index.status()["store"] == "http"
    assert service.ask("shipping costs").sources[0].doc_id == "ship"


def test_unreachable_server_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ServicebotError, match=r"Cannot reach the Chroma server at 127.0.0.1:\d+"):
        connect(tmp_path, "http", "127.0.0.1", free_port())
