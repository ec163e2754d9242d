"""Records on SQLite (WAL) and on a real PostgreSQL server: turns, feedback, handoffs, search, audit, two instances."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.contracts import Passage, Reply, Verdict
from bot.records import Records


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    # PostgreSQL refuses to run as root; CI containers are root, so the server runs as the `postgres` user there.
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL server on 127.0.0.1 (trust auth), stopped after the session.

    Skips when PostgreSQL is not installed (`apt-get install postgresql`; scripts/test.sh does it).
    """
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    owner = "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="servicebot-pg-"))  # pytest's tmp dirs are private to root
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    if owner:
        shutil.chown(base, owner)
        shutil.chown(sockets, owner)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(
        _as_owner([initdb, "-D", str(data), "-A", "trust", "-U", "servicebot", "-E", "UTF8", "--no-sync"], owner),
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=60"
    log = Path(base) / "server.log"
    subprocess.run(
        _as_owner([pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"], owner),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://servicebot@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([pg_ctl, "-D", str(data), "-m", "fast", "stop"], owner), capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "servicebot.db")
    base = request.getfixturevalue("postgres_url")
    # One schema per test keeps tests apart on the one server.
    import psycopg

    schema = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
    return f"{base}?options=-csearch_path%3D{schema}"


def reply(answer: str = "Open Settings > Account.", redacted: str | None = None) -> Reply:
    passage = Passage("p1", "text", 0.8, doc_id="reset-password", title="Reset a forgotten password")
    verdicts = (
        Verdict("pii", False, 0.0, "pii", "checked for personal data", rewrite=redacted),
        Verdict("instruction_override", False, 0.1, "", "no override"),
    )
    return Reply(answer, False, False, (passage,), verdicts, 5, {"total": 12.5}, "answered from passages")


def test_a_turn_is_stored_redacted_with_its_verdicts_and_sources(url: str) -> None:
    records = Records(url)
    sources = [{"id": "reset-password", "title": "Reset a forgotten password"}]
    answer_id = records.add_turn(
        "c1", "web", "my mail is ann@example.com", reply(redacted="my mail is [EMAIL]"), sources
    )
    stored = records.messages("c1")
    assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["id"] == answer_id
    assert stored[0]["content"] == "my mail is [EMAIL]"  # what the pii guard redacted never reaches the store
    assert stored[1]["sources"] == sources
    assert [v["plugin"] for v in stored[1]["verdicts"]] == ["pii", "instruction_override"]
    assert stored[1]["latency"] == {"total": 12.5}
    assert records.conversation("c1")["channel"] == "web"  # type: ignore[index]
    assert records.messages("c1", after=answer_id) == []


def test_turn_writer_stores_every_queued_turn_in_batches_and_skips_only_a_bad_one(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.appstate import TurnWriter

    records = Records(url)
    writer = TurnWriter(lambda: records)
    for i in range(300):  # queued faster than one thread commits them: most go in shared transactions
        writer.put((f"c{i % 7}", "api", f"question {i}", reply(f"answer {i}"), []))
    writer.put(("bad", "api", "a lone surrogate \ud800 no database can encode", reply(), []))
    writer.put(("c0", "api", "the last question", reply("the last answer"), []))
    writer.close()  # returns once everything queued is stored
    stored = [m for i in range(7) for m in records.messages(f"c{i}")]
    assert len(stored) == 2 * 301
    assert sorted(m["content"] for m in stored if m["role"] == "assistant")[:3] == ["answer 0", "answer 1", "answer 10"]
    assert records.messages("c0")[-1]["content"] == "the last answer"
    assert records.messages("bad") == [] and "could not store a turn of conversation bad" in caplog.text


def test_feedback_is_one_rating_per_answer_and_takes_a_comment(url: str) -> None:
    records = Records(url)
    answer = records.add_turn("c2", "web", "q", reply(), [])
    records.add_feedback("c2", answer, 1)
    records.add_feedback("c2", answer, -1)  # changed their mind
    assert records.comment_feedback("c2", "it did not help")
    rows = records.feedback("c2")
    assert [(r["message_id"], r["rating"], r["comment"]) for r in rows] == [(answer, -1, "it did not help")]
    assert not records.comment_feedback("nobody", "x")


def test_handoff_queue_claim_reply_close(url: str) -> None:
    records = Records(url)
    records.add_turn("c3", "web", "I want a person", reply(), [])
    first = records.add_handoff("c3", "t1", "asked for a human", [{"role": "user", "content": "person"}], [])
    again = records.add_handoff("c3", "t2", "asked again", [{"role": "user", "content": "person!"}], [])
    assert again == first and len(records.handoffs("open")) == 1  # one open entry per conversation
    assert records.handoff(first)["reason"] == "asked again"  # type: ignore[index]
    assert records.conversation("c3")["status"] == "human"  # type: ignore[index]
    assert records.claim_handoff(first, "alice")
    assert not records.claim_handoff(first, "bob")  # first claim wins
    assert records.claim_handoff(first, "alice")  # claiming your own again is fine
    records.add_message("c3", "human", "Hi, Alice here.", author="alice")
    assert records.messages("c3")[-1]["role"] == "human" and records.messages("c3")[-1]["author"] == "alice"
    assert records.close_handoff(first) and not records.close_handoff(first)
    assert records.conversation("c3")["status"] == "bot"  # type: ignore[index]
    assert records.handoffs("open") == [] and records.handoffs("closed")[0]["claimed_by"] == "alice"


def test_search_is_case_insensitive_and_takes_wildcards_literally(url: str) -> None:
    records = Records(url)
    records.add_turn("a", "web", "My Camera is OFFLINE", reply(), [])
    records.add_turn("b", "api", "100% refund_please", reply("No."), [])
    assert [c["id"] for c in records.search("camera is offline")] == ["a"]
    assert [c["id"] for c in records.search("100%")] == ["b"]
    assert records.search("_") and [c["id"] for c in records.search("d_p")] == ["b"]
    assert records.search("%x%") == []
    assert [c["id"] for c in records.search("a")][0] in {"a", "b"} and len(records.search("")) == 2


def test_audit_log_is_newest_first_with_details(url: str) -> None:
    records = Records(url)
    records.audit("console:alice", "apply", {"changed": ["guards"], "before": {"x": 1}})
    records.audit("console:bob", "undo", {"of": 1})
    log = records.audit_log()
    assert [e["actor"] for e in log] == ["console:bob", "console:alice"]
    assert log[1]["detail"] == {"changed": ["guards"], "before": {"x": 1}}


def test_two_instances_on_one_database_lose_nothing(url: str) -> None:
    one, two = Records(url), Records(url)  # e.g. two servers behind a load balancer

    def write(records: Records, who: str) -> None:
        for i in range(25):
            records.add_turn(f"{who}-{i % 5}", "api", f"question {i}", reply(), [])
            records.audit(who, "tick", {"i": i})

    threads = [threading.Thread(target=write, args=(r, f"w{n}")) for n, r in enumerate([one, two, one, two])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(one.search("", limit=100)) == 20
    assert sum(len(two.messages(c["id"])) for c in two.search("", limit=100)) == 4 * 25 * 2
    assert len(one.audit_log(limit=1000)) == 100


def test_an_older_sqlite_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the schema before conversations existed
        db.execute(
            "CREATE TABLE handoffs (id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, session_id TEXT "
            "NOT NULL, turn_id TEXT NOT NULL, reason TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open', "
            "transcript TEXT NOT NULL, verdicts TEXT NOT NULL)"
        )
        db.execute(
            "INSERT INTO handoffs (created, session_id, turn_id, reason, transcript, verdicts) "
            "VALUES ('2026-01-01', 's', 't', 'old', '[]', '[]')"
        )
    records = Records(path)
    assert records.handoffs()[0]["reason"] == "old" and records.handoffs()[0]["claimed_by"] == ""
    assert records.claim_handoff(1, "alice")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
