"""One loaded index version: vector search over its segments, BM25, and fetching chunks by id."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.errors import ServicebotError
from knowledge.chroma import Segments
from knowledge.lexical import LexicalIndex
from knowledge.versions import Versions

Filters = Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    """A live chunk: its text and metadata once fetched, its cosine to the query when known."""

    id: str
    text: str
    metadata: dict[str, Any]
    cosine: float | None = None
    vector: Any = None  # the stored embedding, once fetched


def matches(meta: Mapping[str, Any], filters: Filters) -> bool:
    """Whether document metadata satisfies every filter (a list means any of; comma-lists like tags match a member)."""
    for key, wanted in filters.items():
        have = meta.get(key)
        options = {str(w) for w in wanted} if isinstance(wanted, list | tuple | set) else {str(wanted)}
        values = {v.strip() for v in str(have).split(",")} if have is not None else set()
        if not options & (values | {str(have)}):
            return False
    return True


class IndexView:
    """A read-only view of one version: its manifest, segments and BM25 index, loaded once and reused."""

    def __init__(self, versions: Versions, segments: Segments, version: str) -> None:
        self.version = version
        self.manifest = versions.load(version)
        m = self.manifest
        if not m.fits(segments.embedder):
            raise ServicebotError(
                f"The index was built with embedder '{m.embedder}' ({m.dimension} dimensions) but "
                f"'{segments.embedder.id}' ({segments.embedder.dimension} dimensions) is configured: "
                "rebuild it with `bot index rebuild`."
            )
        self.live = m.live()
        self.doc_of = {cid: d for d, e in m.docs.items() for cid in e.chunks}
        self.cols = {name: segments.open(name) for name in m.segments}
        per_segment: dict[str, int] = {}
        for seg in self.live.values():
            per_segment[seg] = per_segment.get(seg, 0) + 1
        self.dead = {name: count - per_segment.get(name, 0) for name, count in m.segments.items()}
        self.lexical = LexicalIndex.load(versions.path(version))
        self._position = {cid: i for i, cid in enumerate(self.lexical.ids)}
        self._masks: dict[str, tuple[set[str], np.ndarray]] = {}

    def allowed(self, filters: Filters | None) -> tuple[set[str], np.ndarray] | None:
        """Document ids passing `filters`, and the matching BM25 chunk mask (cached per filter)."""
        if not filters:
            return None
        key = repr(sorted((k, repr(v)) for k, v in filters.items()))
        if key not in self._masks:
            docs = {d for d, e in self.manifest.docs.items() if matches(e.meta, filters)}
            mask = np.zeros(len(self.lexical.ids), dtype=bool)
            for d in docs:
                for cid in self.manifest.docs[d].chunks:
                    if cid in self._position:
                        mask[self._position[cid]] = True
            self._masks[key] = (docs, mask)
        return self._masks[key]

    def _query(self, seg: str, vector: Sequence[float], n: int, where: dict[str, Any] | None) -> list[Hit]:
        col = self.cols[seg]
        n = min(n + self.dead[seg], self.manifest.segments[seg])
        if n <= 0:
            return []
        res: Any = col.query(
            query_embeddings=np.asarray([vector], dtype=np.float32),
            n_results=n,
            where=where,
            include=["distances"],  # type: ignore[list-item]  # text is fetched for the final few only
        )
        hits = []
        for cid, dist in zip(res["ids"][0], res["distances"][0], strict=True):
            if self.live.get(cid) == seg:  # superseded chunks stay in older segments until compaction
                hits.append(Hit(cid, "", {}, round(1.0 - float(dist), 4)))
        return hits

    def vector(self, vector: Sequence[float], n: int, filters: Filters | None = None) -> list[Hit]:
        """The `n` live chunks closest to `vector` (cosine), optionally only from documents passing `filters`."""
        allowed = self.allowed(filters)
        hits = [h for seg in self.cols for h in self._query(seg, vector, n, None)]
        if allowed is not None:
            hits = [h for h in hits if self.doc_of.get(h.id) in allowed[0]]
            if len(hits) < n and allowed[0]:  # a selective filter: ask Chroma for exactly those documents
                where = {"doc_id": {"$in": sorted(allowed[0])}}
                hits = [h for seg in self.cols for h in self._query(seg, vector, n, where)]
        hits.sort(key=lambda h: -(h.cosine or 0.0))
        return hits[:n]

    def keyword(self, query: str, n: int, filters: Filters | None = None) -> list[tuple[str, float]]:
        """The `n` best BM25 matches as (chunk id, score)."""
        allowed = self.allowed(filters)
        return self.lexical.search(query, n, None if allowed is None else allowed[1])

    def texts(self, batch: int = 512) -> list[str]:
        """The text of every live chunk (in manifest order within each segment)."""
        out: list[str] = []
        for seg, col in self.cols.items():
            ids = [cid for cid, where in self.live.items() if where == seg]
            for start in range(0, len(ids), batch):
                got = col.get(ids=ids[start : start + batch], include=["documents"])  # type: ignore[list-item]
                out += [d for d in got["documents"] or [] if d]
        return out

    def fetch(self, ids: Sequence[str], vector: Sequence[float] | None = None) -> dict[str, Hit]:
        """Text, metadata and stored vector of live chunks by id, with their cosine to `vector` when given (else
        None)."""
        by_seg: dict[str, list[str]] = {}
        for cid in ids:
            if cid in self.live:
                by_seg.setdefault(self.live[cid], []).append(cid)
        q = None if vector is None else np.asarray(vector, dtype=np.float32)
        out: dict[str, Hit] = {}
        for seg, seg_ids in by_seg.items():
            got = self.cols[seg].get(ids=seg_ids, include=["documents", "metadatas", "embeddings"])  # type: ignore[list-item]
            embs = got.get("embeddings")
            for i, cid in enumerate(got["ids"]):
                cosine, v = None, None
                if embs is not None:
                    v = np.asarray(embs[i], dtype=np.float32)
                    if q is not None:
                        cosine = round(float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v) or 1.0)), 4)
                docs, metas = got["documents"] or [], got["metadatas"] or []
                out[cid] = Hit(cid, docs[i] or "", dict(metas[i] or {}), cosine, v)
        return out
