"""Value types and plugin Protocols: the contracts every servicebot component speaks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True)
class Turn:
    """A customer turn: the conversation so far, ending with the customer's newest message."""

    messages: tuple[Message, ...]
    id: str = ""
    session_id: str = ""
    decoded: bool = False  # the newest message is a view the obfuscation guard decoded, not the customer's text
    # The customer's language ("en" or "zh"), fixed by the pipeline before any guard rewrites the message (a
    # redaction or an English gloss must not change it); "" when not yet known (see bot.language.language).
    language: Literal["", "en", "zh"] = ""

    @property
    def text(self) -> str:
        """The newest user message (empty when there is none)."""
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    def with_text(self, text: str) -> Turn:
        """The same turn with the newest user message replaced."""
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "user":
                return replace(self, messages=(*self.messages[:i], Message("user", text), *self.messages[i + 1 :]))
        return replace(self, messages=(*self.messages, Message("user", text)))

    def as_view(self, text: str) -> Turn:
        """The same turn with the newest user message replaced by a decoded view of it (marked `decoded`)."""
        return replace(self.with_text(text), decoded=True)

    @property
    def history(self) -> tuple[Message, ...]:
        """Every message before the newest user message."""
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "user":
                return self.messages[:i]
        return self.messages


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk of knowledge with where it came from."""

    id: str
    text: str
    score: float
    doc_id: str = ""
    title: str = ""
    section: str = ""
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    url: str = ""  # a link to cite (the document's URL, or its source path when it has none)
    # The index's stored vector of `text` and the id of the embedder that made it, so a guard reading the passage
    # with that embedder need not embed it again. Whoever changes `text` must drop the vector.
    vector: Any = field(default=None, repr=False, compare=False)
    embedder: str = ""


@dataclass(frozen=True)
class Verdict:
    """What one guard decided about a turn; score is the risk in [0, 1]."""

    plugin: str
    blocked: bool
    score: float = 0.0
    category: str = ""
    reason: str = ""
    message: str = ""  # what the customer is told when this verdict blocks
    handoff: bool = False
    # Alternative readings of the newest message (e.g. decoded base64); every later guard checks them too.
    views: tuple[str, ...] = ()
    # Replacement for the newest message (input guards) or the draft (output guards), e.g. PII redacted.
    rewrite: str | None = None
    notice: str = ""  # told to the customer even when the turn is allowed ("I removed your card number")


@dataclass(frozen=True)
class Draft:
    """The responder's answer before output guards and policy."""

    text: str
    tokens: int = 0
    prompt_tokens: int = 0  # what the model read (0: the responder does not say)
    finish: Literal["stop", "length"] = "stop"  # "length": the model was cut off by its token limit


@dataclass
class Usage:
    """Filled in by a `Metered` responder while it streams one answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "stop"


@dataclass(frozen=True)
class Reply:
    """The final answer to a turn, with everything needed to explain it."""

    answer: str
    refused: bool
    handoff: bool
    sources: tuple[Passage, ...]
    verdicts: tuple[Verdict, ...]
    tokens: int = 0
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""
    prompt_tokens: int = 0
    finish_reason: Literal["stop", "length"] = "stop"  # "length": the answer shown is the model's, cut off


@runtime_checkable
class InputGuard(Protocol):
    """Checks a turn before retrieval and generation."""

    name: str

    async def check(self, turn: Turn) -> Verdict: ...


@runtime_checkable
class OutputGuard(Protocol):
    """Checks a drafted answer before it is released."""

    name: str

    async def check_output(self, turn: Turn, draft: Draft, passages: Sequence[Passage]) -> Verdict: ...


@runtime_checkable
class PassageGuard(Protocol):
    """Checks retrieved passages before the model sees them (indirect prompt injection)."""

    name: str

    async def check_passages(self, turn: Turn, passages: Sequence[Passage]) -> tuple[list[Passage], Verdict]: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors; `id` names the model so stores can refuse a mismatch."""

    id: str
    dimension: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


@runtime_checkable
class Retriever(Protocol):
    """Finds passages relevant to a query."""

    async def search(self, query: str, k: int) -> list[Passage]: ...


@runtime_checkable
class Responder(Protocol):
    """Writes an answer from the turn and passages, streamed as text deltas."""

    name: str

    def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]: ...


@runtime_checkable
class Metered(Protocol):
    """Optional: responders that report token counts and why an answer ended (for the API's `usage` and
    `finish_reason`). `stream_metered` streams like `stream` and fills `usage` by the time it ends."""

    def stream_metered(self, turn: Turn, passages: Sequence[Passage], usage: Usage) -> AsyncIterator[str]: ...


@runtime_checkable
class Adaptable(Protocol):
    """Optional: responders whose PEFT adapter can be listed and switched live (None = the base model)."""

    def adapters(self) -> list[dict[str, Any]]: ...

    def use_adapter(self, name: str | None) -> None: ...


@runtime_checkable
class ChunkSource(Protocol):
    """Optional: retrievers that can list the text of every passage they may return."""

    def version(self) -> str: ...

    def texts(self) -> tuple[str, list[str]]: ...


@runtime_checkable
class Preparable(Protocol):
    """Optional: responders that can do per-passage work ahead of the prompts quoting those passages."""

    def prepare(self, texts: Sequence[str]) -> int: ...


@runtime_checkable
class Warmable(Protocol):
    """Optional: components that load heavy resources ahead of the first turn."""

    def warm(self) -> None: ...


@dataclass(frozen=True)
class BuildReport:
    """What an index rebuild did (or, from `diff`, would do); document ids per outcome."""

    version: str
    documents: int
    chunks: int
    skipped: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    unchanged: int = 0
    embedded: int = 0  # chunks embedded now; the rest reused stored vectors
    full: bool = False
    reason: str = ""  # why the build was full, or why nothing was switched
    checks: tuple[tuple[str, bool, str], ...] = ()  # (check, passed, detail)
    switched: bool = False
    timings: Mapping[str, float] = field(default_factory=dict)


ProgressFn = Callable[[int, int], None]


@runtime_checkable
class Indexed(Protocol):
    """A retriever that owns a knowledge index it can rebuild and describe."""

    def rebuild(
        self, source: Path | Sequence[Path], progress: ProgressFn | None = None, full: bool = False
    ) -> BuildReport: ...

    def diff(self, source: Path | Sequence[Path]) -> BuildReport: ...

    def rollback(self) -> str: ...

    def status(self) -> dict[str, Any]: ...
