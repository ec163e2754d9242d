"""The `chroma` retriever plugin: hybrid (vector + BM25) search over the serving index version, with citations."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.config import PluginSpec
from bot.contracts import BuildReport, Passage, ProgressFn
from bot.errors import PluginError, ServicebotError
from knowledge.build import Checks
from knowledge.evaluation import evaluate, file_hash, load_questions, recall_at_5
from knowledge.hybrid import Fusion, hybrid_search
from knowledge.plan import Limits
from knowledge.rerank import load_reranker
from knowledge.search import Filters, IndexView
from knowledge.store import KnowledgeStore

log = logging.getLogger(__name__)


def _roots(source: Path | Sequence[Path]) -> list[Path]:
    return [source] if isinstance(source, Path | str) else [Path(s) for s in source]


class ChromaRetriever:
    """Searches the version the alias points at, following the alias when a rebuild (or rollback) switches it."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
        candidates: int = Field(default=30, ge=1, le=500)
        rrf_k: int = Field(default=10, ge=1)  # tuned on the demo QA train split (bench/retrieval_tune.py)
        vector_weight: float = Field(default=1.0, ge=0)
        bm25_weight: float = Field(default=0.7, ge=0)
        filters: dict[str, Any] = Field(default_factory=dict)  # e.g. {language: en, category: [billing, orders]}
        reranker: PluginSpec | None = None  # a plugin from the `servicebot.rerankers` entry-point group

    name = "chroma"

    def __init__(self, config: Config, ctx: Any) -> None:
        if ctx.embedder is None:
            raise PluginError("The chroma retriever needs an embedder.")
        self.config, self._settings, self._embedder = config, ctx.settings, ctx.embedder
        kn = ctx.settings.knowledge
        limits = Limits(kn.chunk_size, kn.chunk_overlap, int(kn.max_file_mb * 1e6), kn.language, kn.max_segments)
        self.store = KnowledgeStore(
            ctx.settings.index_dir,
            kn.collection,
            ctx.embedder,
            limits,
            Checks(None, kn.recall_margin, kn.retain_versions),
            kn.store,
            kn.chroma_host,
            kn.chroma_port,
            kn.chroma_ssl,
        )
        if kn.qa_file is not None:
            self.store.set_recall(self._recall, kn.recall_margin, kn.retain_versions)
        self.fusion = Fusion(config.mode, config.candidates, config.rrf_k, config.vector_weight, config.bm25_weight)
        self.reranker = load_reranker(config.reranker, ctx)

    def search_view(
        self, view: IndexView, query: str, k: int, filters: Filters | None = None, mode: str | None = None
    ) -> list[Passage]:
        """Search one loaded version (the configured filters apply unless `filters` is given)."""
        fusion = self.fusion if mode is None else replace(self.fusion, mode=mode)  # type: ignore[arg-type]
        return hybrid_search(
            view, self._embedder, query, k, fusion, self.config.filters if filters is None else filters, self.reranker
        )

    def search_sync(self, query: str, k: int, filters: Filters | None = None, mode: str | None = None) -> list[Passage]:
        """Top-k passages from the serving version, best first; each scored by cosine similarity."""
        try:
            return self.search_view(self.store.view(), query, k, filters, mode)
        except ServicebotError:
            raise
        except Exception as exc:  # the version vanished under us (pruned mid-query): reload once and retry
            log.warning("search failed on the loaded version (%s); reloading", type(exc).__name__)
            return self.search_view(self.store.view(refresh=True), query, k, filters, mode)

    async def search(self, query: str, k: int) -> list[Passage]:
        """Top-k passages (hybrid by default); `score` is cosine similarity, fusion ranks are in metadata."""
        return await asyncio.to_thread(self.search_sync, query, k)

    def warm(self) -> None:
        """Open the serving version ahead of the first turn."""
        self.store.view()

    def version(self) -> str:
        """The serving version (following the alias)."""
        return self.store.view().version

    def texts(self) -> tuple[str, list[str]]:
        """The serving version and the text of every chunk it can return (for work done ahead, like passage
        blocks)."""
        view = self.store.view()
        return view.version, view.texts()

    def rebuild(
        self, source: Path | Sequence[Path], progress: ProgressFn | None = None, full: bool = False
    ) -> BuildReport:
        """Build a new index version from the source folder(s) and switch to it when it passes the checks."""
        return self.store.rebuild(_roots(source), full, progress)

    def diff(self, source: Path | Sequence[Path]) -> BuildReport:
        """What a rebuild from `source` would add, change and delete."""
        return self.store.diff(_roots(source))

    def rollback(self) -> str:
        """Serve the previous version again."""
        return self.store.rollback()

    def status(self) -> dict[str, Any]:
        """Describe the serving index."""
        return self.store.status()

    def _recall(self, version: str) -> tuple[float | None, str]:
        qa = self._settings.knowledge.qa_file
        view = self.store.open_version(version)
        questions = load_questions(qa)
        recall = recall_at_5(lambda q, n: self.search_view(view, q, n), questions, set(view.manifest.docs))
        return recall, file_hash(qa)

    def evaluate(self, qa_file: Path, modes: Sequence[str] = ("vector", "bm25", "hybrid")) -> dict[str, Any]:
        """Recall@1/5, MRR and nDCG@5 of the serving version on a QA file, per mode, split and category."""
        view, questions = self.store.view(), load_questions(qa_file)
        report: dict[str, Any] = {"qa_file": str(qa_file), "version": view.version, "questions": len(questions)}
        for mode in modes:

            def search(query: str, n: int, mode: str = mode) -> list[Passage]:
                return self.search_view(view, query, n, mode=mode)

            report[mode] = evaluate(search, questions)
        return report
