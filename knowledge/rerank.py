"""The reranker plugin slot (entry-point group `servicebot.rerankers`) and a cross-encoder reranker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.config import PluginSpec, describe_error
from bot.contracts import Passage
from bot.errors import PluginError

GROUP = "servicebot.rerankers"


@runtime_checkable
class Reranker(Protocol):
    """Reorders fused candidates; may drop some. Returning nothing falls back to the fused order."""

    name: str

    def rerank(self, query: str, passages: Sequence[Passage]) -> list[Passage]: ...


def load_reranker(spec: PluginSpec | None, ctx: Any = None) -> Reranker | None:
    """Build the reranker named in `spec` from the `servicebot.rerankers` entry points.

    Raises:
        PluginError: no such reranker, or its config is invalid.
    """
    if spec is None:
        return None
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if spec.name not in found:
        raise PluginError(f"Unknown reranker plugin '{spec.name}' (installed: {', '.join(sorted(found)) or 'none'}).")
    cls = found[spec.name].load()
    try:
        config = cls.Config(**spec.config)
    except ValidationError as exc:
        raise PluginError(describe_error(exc, f"Config error in reranker plugin '{spec.name}'")) from None
    reranker = cls(config, ctx)
    if not isinstance(reranker, Reranker):
        raise PluginError(f"Reranker plugin '{spec.name}' has no rerank(query, passages) method.")
    return reranker


class CrossEncoderReranker:
    """Scores (query, passage) pairs with a sentence-transformers cross-encoder; keeps those above `min_score`."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str  # a Hugging Face id or local path of a cross-encoder
        min_score: float | None = None
        device: str = "cpu"

    name = "cross_encoder"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(config.model, device=config.device)
        except Exception as exc:
            raise PluginError(f"Cross-encoder '{config.model}' could not be loaded ({type(exc).__name__}).") from exc
        self.config = config

    def rerank(self, query: str, passages: Sequence[Passage]) -> list[Passage]:
        """Passages by cross-encoder score, best first (the score is kept in metadata as `rerank`)."""
        scores = self._model.predict([(query, p.text) for p in passages])
        ranked = sorted(zip(passages, map(float, scores), strict=True), key=lambda ps: -ps[1])
        floor = self.config.min_score
        return [
            replace(p, metadata={**p.metadata, "rerank": round(s, 4)}) for p, s in ranked if floor is None or s >= floor
        ]
