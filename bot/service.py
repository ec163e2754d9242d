"""Builds a running servicebot from settings and answers turns (the library behind the CLI and web app)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.admission import Admission
from bot.config import DEFAULT_CONFIG, PluginSpec, Settings, load_settings
from bot.config_file import save_sections
from bot.contracts import (
    Adaptable,
    ChunkSource,
    Indexed,
    InputGuard,
    Message,
    OutputGuard,
    PassageGuard,
    Preparable,
    Reply,
    Turn,
    Warmable,
)
from bot.errors import PluginError, ServicebotError
from bot.pipeline import Delta, Pipeline, stream_turn
from bot.policy import Policy
from bot.records import Records
from bot.registry import PluginContext, build
from bot.replies import parse_messages, reply_json, sources

__all__ = ["Service", "build_pipeline", "parse_messages", "reply_json", "sources"]  # replies re-exported

log = logging.getLogger(__name__)


def build_pipeline(settings: Settings, previous: tuple[Settings, Pipeline] | None = None) -> Pipeline:
    """Build every configured plugin, in the operator's order.

    With `previous`, components whose spec did not change are reused as they are (a reload keeps loaded
    models and open indexes); everything else is built fresh.

    Raises:
        PluginError: a plugin is unknown, misconfigured, or of the wrong kind for its place.
    """
    old_settings, old = previous if previous else (settings, None)
    models_same = old is not None and (old_settings.embedder, old_settings.data_dir) == (
        settings.embedder,
        settings.data_dir,
    )
    reuse: dict[tuple[str, str], Any] = {}
    if old is not None and models_same:
        g = old_settings.guards
        for spec, built in zip(
            [*g.input, *g.output, *g.passages],
            [*old.input_guards, *old.output_guards, *old.passage_guards],
            strict=False,
        ):
            reuse[(spec.name, spec.model_dump_json())] = built
    embedder = old.embedder if old is not None and models_same else None
    embedder = embedder or build("embedder", settings.embedder, PluginContext(settings))
    ctx = PluginContext(settings, embedder=embedder)
    guard_ctx = PluginContext(settings, embedder=_guard_embedder(embedder, settings, old))

    def guard(spec: Any) -> Any:
        return reuse.get((spec.name, spec.model_dump_json())) or build("guard", spec, guard_ctx)

    inputs = [guard(spec) for spec in settings.guards.input]
    outputs = [guard(spec) for spec in settings.guards.output]
    passage_guards = [guard(spec) for spec in settings.guards.passages]
    for kind, group, needed in (
        ("input", inputs, InputGuard),
        ("output", outputs, OutputGuard),
        ("passages", passage_guards, PassageGuard),
    ):
        for g in group:
            if not isinstance(g, needed):
                raise PluginError(f"Guard '{g.name}' cannot check {kind} (it lacks the method for that stage).")
    keep_retriever = models_same and (old_settings.retriever, old_settings.knowledge) == (
        settings.retriever,
        settings.knowledge,
    )
    responder = _reuse_responder(old_settings, old, settings)
    return Pipeline(
        input_guards=inputs,
        retriever=old.retriever if keep_retriever and old else build("retriever", settings.retriever, ctx),
        responder=responder or build("responder", settings.responder, ctx),
        output_guards=outputs,
        policy=Policy(
            min_score=settings.knowledge.min_score,
            weights=dict(settings.policy.weights),
            refuse_threshold=settings.policy.refuse_threshold,
            helpfulness_weight=settings.policy.helpfulness_weight,
        ),
        passage_guards=passage_guards,
        k=settings.knowledge.k,
        guard_timeout_s=settings.guards.timeout_s,
        embedder=embedder,
        guard_embedder=guard_ctx.embedder,
    )


def _guard_embedder(embedder: Any, settings: Settings, old: Pipeline | None) -> Any:
    """The embedder the learned guards read meaning with: the knowledge embedder, unless it says its vectors are
    not fit for that (`guard_features = False`, e.g. the static embedder), then the default sentence-transformer,
    so choosing a fast index embedder never weakens the guards they were measured with. An embedder that embeds
    queries with a transformer of its own (`query_encoder`, the static table with `queries: minilm`) shares it with
    the guards: one model, and one embedding of each message."""
    if getattr(embedder, "guard_features", True):
        return embedder
    own = getattr(embedder, "query_encoder", None)
    if own is not None and getattr(own, "guard_features", True):
        return own
    previous = getattr(old, "guard_embedder", None) if old is not None else None
    if previous is not None and previous is not getattr(old, "embedder", None):
        return previous
    return build("embedder", PluginSpec(name="minilm"), PluginContext(settings))


def _reuse_responder(old_settings: Settings, old: Pipeline | None, settings: Settings) -> Any:
    """The running responder when its settings are unchanged, or when only its adapter changed (switched live)."""
    if old is None:
        return None
    before, after = old_settings.responder, settings.responder
    if before == after:
        return old.responder
    only_adapter = before.name == after.name and {**before.config, "adapter": None} == {**after.config, "adapter": None}
    if only_adapter and isinstance(old.responder, Adaptable):
        old.responder.use_adapter(after.config.get("adapter"))
        return old.responder
    return None


@dataclass
class Service:
    """A configured servicebot: settings, the pipeline built from them, and its records.

    When started from a config file, the file is re-read when it changes (checked at every turn): plugins,
    their order, weights and thresholds take effect without a restart, and every change is audited.
    """

    settings: Settings
    pipeline: Pipeline
    config_path: Path | None = None
    records: Records | None = None
    _stamp: float = field(default=0.0, repr=False)
    _prepared_for: str = field(default="", repr=False)  # the index version whose passages were last prepared

    @classmethod
    def start(cls, settings: Settings, warm: bool = True, config_path: Path | None = None) -> Service:
        """Build the pipeline and (by default) load models and open the index up front."""
        stamp = config_path.stat().st_mtime_ns if config_path and config_path.exists() else 0.0
        records = Records(settings.database_url or settings.data_dir / "servicebot.db")
        service = cls(settings, build_pipeline(settings), config_path, records, stamp)
        if warm:
            service.warm()
        return service

    def warm(self) -> None:
        """Load heavy components now rather than on the first turn."""
        p = self.pipeline
        for part in (*p.input_guards, *p.passage_guards, *p.output_guards, p.retriever, p.responder):
            if isinstance(part, Warmable):
                part.warm()

    def prepare_passages(self) -> int:
        """Hand every chunk of the serving index to the responder for its work ahead (the `hf` responder computes
        their passage blocks when it is idle), and again, from the next turn on, whenever a rebuild or rollback
        switches the serving version. Returns how many passages were queued; failures are logged, never raised
        (this only costs speed)."""
        p = self.pipeline
        if not isinstance(p.responder, Preparable) or not isinstance(p.retriever, ChunkSource):
            return 0
        try:
            version, texts = p.retriever.texts()
            self._prepared_for = version
            return p.responder.prepare(texts)
        except Exception:
            log.exception("passages could not be prepared ahead")
            return 0

    def _follow_index(self) -> None:
        """Prepare the passages of a version the index switched to since they were last prepared (in the
        background: a stored block is skipped, so only new or changed chunks are computed)."""
        retriever = self.pipeline.retriever
        if not self._prepared_for or not isinstance(retriever, ChunkSource):
            return
        try:
            version = retriever.version()
        except Exception:  # no index at the moment: the turn itself says so
            return
        if version != self._prepared_for:
            self._prepared_for = version
            self.prepare_passages_later()

    def prepare_passages_later(self) -> None:
        """`prepare_passages` in a background thread (the server answers meanwhile)."""
        threading.Thread(target=self.prepare_passages, name="servicebot-prepare", daemon=True).start()

    def apply(self, settings: Settings, actor: str) -> list[str]:
        """Switch to new settings live, reusing unchanged components; audit-logged. Returns what changed.

        Raises:
            ServicebotError: the new settings cannot be built; the running pipeline is left as it was.
        """
        changed = [k for k in Settings.model_fields if getattr(self.settings, k) != getattr(settings, k)]
        if not changed:
            return []
        pipeline = build_pipeline(settings, (self.settings, self.pipeline))
        fresh = [] if pipeline.responder is self.pipeline.responder else [pipeline.responder]
        for part in (*pipeline.input_guards, *pipeline.passage_guards, *pipeline.output_guards, *fresh):
            if isinstance(part, Warmable):  # a new model or a remote engine is checked before it serves
                part.warm()
        before = {k: getattr(self.settings, k) for k in changed}
        self.settings, self.pipeline = settings, pipeline  # one assignment: turns see old or new, never a mix
        if self.records:
            self.records.audit(
                actor,
                "apply",
                {
                    "changed": changed,
                    "before": _dump(before),
                    "after": _dump({k: getattr(settings, k) for k in changed}),
                },
            )
        log.warning("applied new settings from %s: %s", actor, ", ".join(changed))
        return changed

    def save(self, before: Settings, sections: Sequence[str], actor: str) -> str:
        """Write a live change (from `before` to the current settings) into the config file, so it survives a
        restart and reaches every instance reading that file. Returns one sentence for the operator.

        Only the changed keys of `sections` are rewritten; the file's comments and everything else stay. A file
        that changed on disk since it was read is left alone (it is applied at the next turn, as always).
        """
        if not sections:
            return ""
        path = self.config_path
        if path is None or path.resolve() == DEFAULT_CONFIG.resolve():  # never edit the packaged defaults
            return (
                "Not saved: this server runs on the built-in config, so the change lasts until it restarts "
                "(start it with --config FILE to keep changes)."
            )
        try:
            stamp = path.stat().st_mtime_ns
        except OSError as exc:
            return f"Not saved: config file {path} cannot be read ({exc.strerror or exc})."
        if stamp != self._stamp:
            return f"Not saved: {path} changed on disk meanwhile; what it says now applies at the next turn."
        try:
            save_sections(path, before, self.settings, sections)
            self._stamp = path.stat().st_mtime_ns
        except (ServicebotError, OSError) as exc:
            log.error("live change not saved: %s", exc)
            return f"Not saved: {exc}"
        if self.records:
            self.records.audit(actor, "saved", {"file": str(path), "sections": list(sections)})
        return f"Saved to {path}."

    def maybe_reload(self) -> None:
        """Re-read the config file if it changed; an invalid file is audited and ignored."""
        if self.config_path is None:
            return
        try:
            stamp = self.config_path.stat().st_mtime_ns
        except OSError:
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.apply(load_settings(self.config_path), actor=f"config file {self.config_path}")
        except ServicebotError as exc:
            log.error("config change rejected, still serving the previous config: %s", exc)
            if self.records:
                self.records.audit(f"config file {self.config_path}", "rejected", {"error": str(exc)})

    def adapters(self) -> list[dict[str, Any]]:
        """The responder's PEFT adapters (name, method, base model, card metrics, active).

        Raises:
            PluginError: the responder does not support adapters.
        """
        return self._adaptable().adapters()

    def use_adapter(self, name: str | None, actor: str) -> None:
        """Switch the responder's adapter live (None = the base model); audit-logged.

        Raises:
            PluginError: the responder has no adapters, or this one is missing, corrupt or for another model;
                the running adapter keeps serving.
        """
        responder = self._adaptable()
        before = self.settings.responder.config.get("adapter")
        responder.use_adapter(name)
        spec = self.settings.responder.model_copy(
            update={"config": {**self.settings.responder.config, "adapter": name}}
        )
        self.settings = self.settings.model_copy(update={"responder": spec})
        if self.records:
            self.records.audit(actor, "adapter", {"before": before, "after": name})
        log.warning("adapter switched by %s: %s -> %s", actor, before, name)

    def _adaptable(self) -> Adaptable:
        responder = self.pipeline.responder
        if not isinstance(responder, Adaptable):
            raise PluginError(f"The responder '{self.settings.responder.name}' does not use adapters.")
        return responder

    @property
    def index(self) -> Indexed:
        """The retriever's index, for rebuild and status."""
        retriever = self.pipeline.retriever
        if not isinstance(retriever, Indexed):
            raise PluginError(f"The retriever '{self.settings.retriever.name}' does not manage an index.")
        return retriever

    def turn(self, messages: Sequence[Message], session_id: str = "") -> Turn:
        """Make a Turn with a fresh id."""
        return Turn(tuple(messages), id=uuid.uuid4().hex, session_id=session_id)

    async def answer(self, messages: Sequence[Message], session_id: str = "", admit: Admission | None = None) -> Reply:
        """Answer one turn."""
        reply: Reply | None = None
        async for event in self.stream(messages, session_id, admit):
            if isinstance(event, Reply):
                reply = event
        assert reply is not None
        return reply

    async def stream(
        self, messages: Sequence[Message], session_id: str = "", admit: Admission | None = None
    ) -> AsyncIterator[Delta | Reply]:
        """Answer one turn, streaming; a handoff is queued for a human with the redacted transcript.

        `admit` is the web app's gate on turns answering at once (see `Admission`).
        """
        self.maybe_reload()
        self._follow_index()
        turn = self.turn(messages, session_id)
        async for event in stream_turn(turn, self.pipeline, admit):
            if isinstance(event, Reply) and event.handoff and self.records is not None:
                self._queue_handoff(turn, event)
            yield event

    def _queue_handoff(self, turn: Turn, reply: Reply) -> None:
        redacted = next((v.rewrite for v in reply.verdicts if v.rewrite is not None and v.category == "pii"), None)
        shown = turn.with_text(redacted) if redacted is not None else turn
        transcript = [{"role": m.role, "content": m.content} for m in shown.messages]
        transcript.append({"role": "assistant", "content": reply.answer})
        verdicts = [
            {"plugin": v.plugin, "blocked": v.blocked, "score": v.score, "category": v.category, "reason": v.reason}
            for v in reply.verdicts
        ]
        assert self.records is not None
        self.records.add_handoff(turn.session_id, turn.id, reply.reason, transcript, verdicts)

    def ask(self, text: str) -> Reply:
        """Answer one question synchronously (CLI use)."""
        return self.ask_messages([Message("user", text)])

    def ask_messages(self, messages: Sequence[Message]) -> Reply:
        """Answer one conversation synchronously."""
        return asyncio.run(self.answer(messages))


def _dump(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else str(v) for k, v in values.items()}
