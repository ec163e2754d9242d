"""What the web app's parts share: the service, secrets, metrics, rate limits, and storage off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.admission import Admission
from bot.auth import Secrets
from bot.contracts import Reply
from bot.metrics import Metrics
from bot.ratelimit import RateLimiter
from bot.records import Records, TurnRow
from bot.service import Service, sources

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_ACTIVE_TURNS = 8  # turns answering at once when neither the settings nor the responder say
TOO_FAST = "You are sending messages faster than we can answer; please wait a moment and try again."


@dataclass
class AppState:
    """One per web app (never global): built by `create_app`, handed to the API, chat and consoles."""

    service: Service
    secrets: Secrets
    metrics: Metrics = field(default_factory=Metrics)
    started: float = field(default_factory=time.time)
    # Storage gets threads of its own: a turn waiting on the database never queues behind retrieval work.
    _storage: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="servicebot-db"), repr=False
    )
    _writer: TurnWriter = field(init=False, repr=False)
    ip_limit: RateLimiter = field(init=False)
    session_limit: RateLimiter = field(init=False)
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self._writer = TurnWriter(lambda: self.records)
        server = self.service.settings.server
        # One address may carry many customers (an office, a proxy): it gets ten sessions' worth of burst.
        self.ip_limit = RateLimiter(server.rate_per_ip, server.rate_burst * 10)
        self.session_limit = RateLimiter(server.rate_per_session, server.rate_burst)
        active = server.max_active_turns
        if active is None:  # a responder may say how many turns it serves well at once (a batch, a remote pool)
            active = int(getattr(self.service.pipeline.responder, "concurrency", DEFAULT_ACTIVE_TURNS))
        self.admission = Admission(active)

    @property
    def browser_secret(self) -> str:
        """Encrypts what the chat keeps in the customer's browser (the conversation id)."""
        return hashlib.sha256(b"browser:" + self.secrets.session_secret).hexdigest()

    @property
    def records(self) -> Records:
        """The service's records (a service built without any gets a SQLite file in its data_dir)."""
        if self.service.records is None:
            self.service.records = Records(self.service.settings.data_dir / "servicebot.db")
        return self.service.records

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking records call on the storage threads."""
        return await asyncio.get_running_loop().run_in_executor(self._storage, lambda: fn(*args))

    def limited(self, ip: str, session: str) -> str | None:
        """Which limit a new turn from this address and session breaks ('ip' or 'session'), or None."""
        if not self.ip_limit.allow(ip):
            broken = "ip"
        elif session and not self.session_limit.allow(session):
            broken = "session"
        else:
            return None
        self.metrics.inc("servicebot_rate_limited_total", limit=broken)
        return broken

    async def record_turn(self, conversation_id: str, channel: str, question: str, reply: Reply) -> int:
        """Store a finished turn and count it; returns the stored answer's id (0 when storage failed).

        A storage failure is logged and does not take the answer away from the customer.
        """
        self.metrics.record_reply(reply, channel)
        try:
            return await self.db(self.records.add_turn, conversation_id, channel, question, reply, sources(reply))
        except Exception:
            log.exception("could not store a turn of conversation %s", conversation_id)
            return 0

    def record_later(self, conversation_id: str, channel: str, question: str, reply: Reply) -> None:
        """Count a finished turn now and store it in the background (the answer does not wait for the disk).

        Pending writes are finished on shutdown (`close`); a failure is logged.
        """
        self.metrics.record_reply(reply, channel)
        self._writer.put((conversation_id, channel, question, reply, sources(reply)))

    def close(self) -> None:
        """Let pending storage calls finish."""
        self._writer.close()
        self._storage.shutdown(wait=True)


class TurnWriter:
    """Stores finished turns on one background thread, all turns waiting at that moment in one transaction.

    Under load this turns hundreds of small transactions a second (a connection, a write lock and a commit each,
    on threads competing with the event loop for the interpreter) into a few larger ones. A batch that fails is
    retried turn by turn, so one bad turn is logged and skipped without losing the others.
    """

    BATCH = 256

    def __init__(self, records: Callable[[], Records]) -> None:
        self._records = records
        self._queue: queue.SimpleQueue[TurnRow | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, turn: TurnRow) -> None:
        """Queue one turn (conversation id, channel, question, reply, sources) for storage."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="servicebot-turns", daemon=True)
                self._thread.start()
        self._queue.put(turn)

    def close(self) -> None:
        """Store everything queued so far, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[TurnRow] = []
            while item is not None:
                batch.append(item)
                if len(batch) >= self.BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stop = item is None
            if batch:
                self._write(batch)

    def _write(self, batch: list[TurnRow]) -> None:
        records = self._records()
        try:
            records.add_turns(batch)
            return
        except Exception:
            if len(batch) == 1:
                log.exception("could not store a turn of conversation %s", batch[0][0])
                return
        for turn in batch:  # the batch rolled back: store the good turns one by one
            try:
                records.add_turn(*turn)
            except Exception:
                log.exception("could not store a turn of conversation %s", turn[0])
