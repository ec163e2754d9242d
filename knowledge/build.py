"""Rebuilds: embed only what changed into a new segment, check the result, switch the alias, prune old versions."""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.contracts import BuildReport, Embedder, ProgressFn
from bot.errors import ServicebotError
from knowledge.chroma import BATCH, Segments
from knowledge.chunking import Chunk
from knowledge.lexical import LexicalIndex, TokenStore
from knowledge.plan import Limits, Plan, doc_entry, make_plan
from knowledge.versions import DocEntry, Manifest, Versions

log = logging.getLogger(__name__)
RecallFn = Callable[[str], "tuple[float | None, str]"]  # version -> (recall@5 or None, QA file hash)


@dataclass(frozen=True)
class Checks:
    """What a new version must pass before the alias switches to it."""

    recall: RecallFn | None = None  # set when a QA file is configured
    recall_margin: float = 0.02
    retain: int = 3


class Builder:
    """Builds new versions of one index; the serving version is never modified."""

    def __init__(self, versions: Versions, segments: Segments, embedder: Embedder, limits: Limits, checks: Checks):
        self.versions, self.segments, self.embedder = versions, segments, embedder
        self.limits, self.checks = limits, checks

    def previous(self) -> Manifest | None:
        """The serving version's manifest (None before the first build or for an unreadable one)."""
        current = self.versions.current()
        try:
            return self.versions.load(current) if current else None
        except ServicebotError:
            log.warning("serving version %s has no usable manifest; the next build is a full one", current)
            return None

    def diff(self, roots: Sequence[Path], full: bool = False) -> BuildReport:
        """What a rebuild would change, without embedding or writing anything."""
        start = time.perf_counter()
        plan = make_plan(roots, self.previous(), self.embedder, self.limits, full)
        return self._report(plan, "(not built)", 0, start, {}, (), False)

    def rebuild(self, roots: Sequence[Path], full: bool = False, progress: ProgressFn | None = None) -> BuildReport:
        """Build a new version (incremental unless `full` or forced) and switch to it if it passes the checks.

        Raises:
            ServicebotError: a source folder is missing, nothing is indexable, a check failed, or another
                rebuild is running. The serving version is unchanged in every case.
        """
        with self.versions.lock():
            start, timings = time.perf_counter(), {}
            prev = self.previous()
            plan = make_plan(roots, prev, self.embedder, self.limits, full)
            timings["plan"] = round(time.perf_counter() - start, 3)
            if plan.chunk_count == 0:
                raise ServicebotError(
                    f"No indexable documents in {', '.join(map(str, roots))}; the current index is unchanged."
                )
            if plan.is_noop and prev is not None and plan.files == prev.files:
                return self._report(plan, prev.version, 0, start, timings, (), False, "nothing changed")
            version = f"{self.versions.name}.v{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
            log.info("stage write: %s (%d chunks to write)", version, sum(len(c) for _, c in plan.write))
            try:
                embedded = self._write(version, plan, prev, roots, progress, timings)
                log.info("stage checks: %s", version)
                checks = self._check(version, prev, timings)
                failed = [c for c in checks if not c[1]]
                if failed:
                    raise ServicebotError(
                        f"Version {version} failed the check '{failed[0][0]}' ({failed[0][2]}); "
                        "the serving index is unchanged."
                    )
                log.info("stage switch: %s", version)
                self.versions.switch(version, self.checks.retain)
            except BaseException:
                self.segments.drop(version)
                self.versions.remove(version)
                raise
            finally:
                self.prune()
            return self._report(plan, version, embedded, start, timings, checks, True)

    def _vectors(self, chunks: list[Chunk], prev: Manifest | None, reuse: bool) -> dict[str, np.ndarray]:
        """Stored vectors for chunks whose text is unchanged: the serving version's, or a crashed build's."""
        found: dict[str, np.ndarray] = {}
        wanted = [c.id for c in chunks]
        sources: list[str] = []
        if prev is not None and reuse:
            live = prev.live()
            sources += sorted({live[c] for c in wanted if c in live})
        retained = set(self._retained_segments())
        sources += [s for s in self.segments.names(f"{self.versions.name}.v") if s not in retained]  # resume
        for seg in sources:
            need = [c for c in wanted if c not in found]
            if need:
                found.update(self.segments.vectors(seg, need))
        return found

    def _write(
        self,
        version: str,
        plan: Plan,
        prev: Manifest | None,
        roots: Sequence[Path],
        progress: ProgressFn | None,
        timings: dict[str, float],
    ) -> int:
        t = time.perf_counter()
        chunks = [c for _, cs in plan.write for c in cs]
        stored = self._vectors(chunks, prev, plan.reuse_previous)
        col = self.segments.create(version, {"built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
        embedded, embed_s = 0, 0.0
        for i in range(0, len(chunks), BATCH):
            batch = chunks[i : i + BATCH]
            todo = [c for c in batch if c.id not in stored]
            if todo:
                e0 = time.perf_counter()
                fresh = self.embedder.embed_documents([c.text for c in todo])
                embed_s += time.perf_counter() - e0
                stored.update({c.id: np.asarray(v, dtype=np.float32) for c, v in zip(todo, fresh, strict=True)})
                embedded += len(todo)
            col.add(
                ids=[c.id for c in batch],
                documents=[c.text for c in batch],
                metadatas=[c.metadata for c in batch],  # type: ignore[misc]
                embeddings=np.stack([stored[c.id] for c in batch]),
            )
            if progress:
                progress(min(i + BATCH, len(chunks)), len(chunks))
        timings["embed"] = round(embed_s, 3)
        timings["write"] = round(time.perf_counter() - t - embed_s, 3)
        log.info("stage bm25: %s", version)
        t = time.perf_counter()
        docs = dict(plan.carry) | {doc.id: doc_entry(doc, cs, version) for doc, cs in plan.write}
        live_ids = [cid for entry in docs.values() for cid in entry.chunks]
        folder = self.versions.path(version)
        tokens = TokenStore.load(self.versions.path(prev.version)) if prev and not plan.full else TokenStore()
        tokens = tokens.keep(live_ids)
        tokens.add([c.id for c in chunks], [c.text for c in chunks])
        self._tokenize_missing(tokens, live_ids, docs)
        tokens.save(folder)
        LexicalIndex.build(tokens, live_ids).save(folder)
        timings["bm25"] = round(time.perf_counter() - t, 3)
        used = {e.segment for e in docs.values()}
        segments = {s: n for s, n in (prev.segments.items() if prev and not plan.full else ()) if s in used}
        log.info("stage manifest: %s", version)
        self.versions.save(
            Manifest(
                version,
                self.embedder.id,
                self.embedder.dimension,
                {"size": self.limits.chunk_size, "overlap": self.limits.chunk_overlap},
                {**segments, version: len(chunks)},
                plan.files,
                docs,
                dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                [str(r) for r in roots],
                [[s.source, s.reason] for s in plan.skipped],
            )
        )
        return embedded

    def _tokenize_missing(self, tokens: TokenStore, live_ids: list[str], docs: dict[str, DocEntry]) -> None:
        """Chunks carried over without stored tokens (a damaged token file): read their text back and tokenize."""
        missing = tokens.missing(live_ids)
        if not missing:
            return
        live = {cid: e.segment for e in docs.values() for cid in e.chunks}
        for seg in sorted({live[c] for c in missing}):
            ids = [c for c in missing if live[c] == seg]
            got = self.segments.open(seg).get(ids=ids, include=["documents"])  # type: ignore[list-item]
            tokens.add(got["ids"], [d or "" for d in got["documents"] or []])

    def _check(self, version: str, prev: Manifest | None, timings: dict[str, float]) -> list[tuple[str, bool, str]]:
        t = time.perf_counter()
        manifest = self.versions.load(version)
        counts = {s: self.segments.open(s).count() for s in manifest.segments}  # also refuses a foreign embedder
        ok = manifest.chunk_count > 0 and all(counts[s] == n for s, n in manifest.segments.items())
        checks = [("non-empty", ok, f"{manifest.chunk_count} chunks in {len(counts)} segment(s)")]
        full = next(s for s in counts if counts[s]) if any(counts.values()) else version
        sample = self.segments.open(full).get(limit=1, include=["embeddings"])["embeddings"]  # type: ignore[list-item]
        dim = len(sample[0]) if sample is not None and len(sample) else 0
        same = manifest.embedder == self.embedder.id and dim == self.embedder.dimension
        checks.append(("embedder", same, f"{self.embedder.id}, {dim} dimensions stored"))
        if self.checks.recall is not None:
            new, qa_hash = self.checks.recall(version)
            old = self._recall_of(prev, qa_hash)
            manifest.metrics = {"recall@5": new} if new is not None else {}
            manifest.metrics["qa_hash"] = qa_hash  # type: ignore[assignment]
            self.versions.save(manifest)
            if new is None:
                checks.append(("recall@5", True, "skipped: the QA file asks about none of these documents"))
            else:
                passed = old is None or new >= old - self.checks.recall_margin
                detail = f"{new:.3f} vs serving {old:.3f}" if old is not None else f"{new:.3f} (no serving version)"
                checks.append(("recall@5", passed, detail + f", margin {self.checks.recall_margin}"))
        timings["checks"] = round(time.perf_counter() - t, 3)
        return checks

    def _recall_of(self, prev: Manifest | None, qa_hash: str) -> float | None:
        if prev is None or self.checks.recall is None:
            return None
        if prev.metrics.get("qa_hash") == qa_hash and "recall@5" in prev.metrics:
            return float(prev.metrics["recall@5"])
        try:
            return self.checks.recall(prev.version)[0]
        except ServicebotError:
            return None

    def _retained_segments(self) -> list[str]:
        names: set[str] = set()
        for v in self.versions.retained():
            try:
                names |= set(self.versions.load(v).segments)
            except ServicebotError:
                names.add(v)  # an older servicebot's single-collection version
        return sorted(names)

    def prune(self) -> None:
        """Drop versions beyond retention and every segment no retained version uses (crash leftovers too)."""
        keep = set(self._retained_segments())
        legacy = re.compile(rf"^{re.escape(self.versions.name)}-\d{{8}}T")
        for name in self.segments.names(self.versions.name):
            if name not in keep and (name.startswith(f"{self.versions.name}.v") or legacy.match(name)):
                self.segments.drop(name)
        retained = set(self.versions.retained())
        for v in self.versions.on_disk():
            if v not in retained:
                self.versions.remove(v)

    def _report(
        self,
        plan: Plan,
        version: str,
        embedded: int,
        start: float,
        timings: dict[str, float],
        checks: Sequence[tuple[str, bool, str]],
        switched: bool,
        reason: str = "",
    ) -> BuildReport:
        return BuildReport(
            version=version,
            documents=plan.document_count,
            chunks=plan.chunk_count,
            skipped=tuple((s.source, s.reason) for s in plan.skipped),
            seconds=round(time.perf_counter() - start, 3),
            added=tuple(plan.added),
            changed=tuple(plan.changed),
            deleted=tuple(plan.deleted),
            unchanged=plan.unchanged,
            embedded=embedded,
            full=plan.full,
            reason=reason or plan.reason,
            checks=tuple(checks),
            switched=switched,
            timings=dict(timings),
        )
