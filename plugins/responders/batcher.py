"""Continuous batching: one scheduler thread runs a batched decode step for every active sequence."""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from bot.errors import PluginError
from plugins.responders.blocks import PassageBlocks
from plugins.responders.engine import KVCache, LlamaEngine
from plugins.responders.textstream import TextStream

log = logging.getLogger(__name__)

END = object()  # emitted once, after the last delta (or after an exception)
IDLE_S = 30.0  # an idle scheduler thread ends after this long


_LIVE: weakref.WeakSet[Scheduler] = weakref.WeakSet()
_THREADS: dict[threading.Thread, threading.Event] = {}  # other generating threads and their stop flags


def start_stoppable(target: Callable[[], object], stop: threading.Event, name: str) -> None:
    """Run `target` in a daemon thread that, like every scheduler, is stopped (`stop` set) and awaited at exit."""

    def run() -> None:
        try:
            target()
        finally:
            _THREADS.pop(threading.current_thread(), None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    _THREADS[thread] = stop
    thread.start()


def _close_all(timeout: float = 30.0) -> None:  # at interpreter exit, before daemon threads are torn down
    for stop in list(_THREADS.values()):
        stop.set()
    for scheduler in list(_LIVE):
        scheduler.close(timeout)
    for thread in list(_THREADS):
        thread.join(timeout)


atexit.register(_close_all)


@dataclass
class Model:
    """What a request is generated with: an engine plus its cached system-prompt prefix (swapped atomically).

    `recent` keeps the KV caches of the last `recent_size` prompts (only the scheduler thread touches it). A new
    prompt starts from the longest token prefix it shares with one of them or with the system prompt: customers
    asking about the same topic get the same passages, which come before the question, so only the question's
    tokens are prefilled again. Positions below a prompt's length are never written again, so a cache can be
    shared while its own request is still decoding.
    """

    engine: LlamaEngine
    eos: frozenset[int]
    prefix: KVCache | None = None
    recent_size: int = 0
    recent: deque[tuple[list[int], KVCache]] = field(default_factory=deque)
    reused: int = 0  # prompt tokens taken from caches instead of prefilled (for tests and benchmarks)
    blocks: PassageBlocks | None = None  # passage blocks spliced into prompts (None: every token is prefilled)
    recompute: float = 0.0  # the share of spliced tokens computed again in the prompt (see LlamaEngine.prefill_spliced)

    def best_start(self, ids: list[int]) -> tuple[KVCache | None, int]:
        """The cache sharing the longest prefix with `ids` (at least one token is left to prefill) and its length."""
        best, best_n = None, 0
        candidates = [(self.prefix.tokens, self.prefix)] if self.prefix is not None else []
        for tokens, cache in [*candidates, *self.recent]:
            n = _common(tokens, ids, len(ids) - 1)
            if n > best_n:
                best, best_n = cache, n
        return best, best_n

    def remember(self, ids: list[int], cache: KVCache) -> None:
        """Keep this prompt's cache for later prompts that start the same way (least recently stored goes)."""
        if self.recent_size <= 0:
            return
        self.recent.append((list(ids), cache))
        while len(self.recent) > self.recent_size:
            self.recent.popleft()


def _common(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of two token lists, at most `limit`."""
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Request:
    """One generation: prompt ids in, text deltas (then END) out through `emit`, called from the scheduler."""

    model: Model
    prompt: list[int]
    max_new_tokens: int
    text: TextStream
    emit: Callable[[Any], None]
    repetition_penalty: float = 1.0
    spans: list[tuple[int, int]] = field(default_factory=list)  # the passages' token ranges in `prompt`
    cancelled: threading.Event = field(default_factory=threading.Event)
    cache: KVCache | None = None
    generated: int = 0
    last: int = -1
    seen: torch.Tensor | None = None  # token ids the repetition penalty applies to
    # Why it ended: "stop" (end of answer, a stop sequence) or "length" (the token limit, or the context is full).
    finish: Literal["stop", "length"] = "stop"


class Scheduler:
    """Admits requests between decode steps (up to `max_batch` at once) and frees a slot when one ends.

    Args:
        max_batch: the most sequences decoded together; further requests wait their turn.
    """

    def __init__(self, max_batch: int = 8) -> None:
        self.max_batch = max_batch
        self._pending: deque[Request] = deque()
        self._active: list[Request] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._chores: deque[Callable[[], object]] = deque()
        self._closed = False
        self.peak = 0  # the largest batch decoded so far (for tests and benchmarks)
        _LIVE.add(self)

    @property
    def active(self) -> int:
        """How many sequences hold a slot now."""
        return len(self._active)

    @property
    def chores(self) -> int:
        """How many background chores wait for an idle moment."""
        return len(self._chores)

    def submit(self, request: Request) -> None:
        """Queue a request; its deltas arrive through `request.emit`. Set `request.cancelled` to drop it."""
        with self._wake:
            if not self._closed:
                self._pending.append(request)
                self._wake_thread()
                return
        request.emit(PluginError("The model is shutting down; try again in a moment."))
        request.emit(END)

    def when_idle(self, chore: Callable[[], object]) -> None:
        """Run `chore` on the scheduler thread when no request is waiting or generating (one chore at a time, so a
        request arriving meanwhile waits at most for the chore under way). A chore that fails is logged."""
        with self._wake:
            if self._closed:
                return
            self._chores.append(chore)
            self._wake_thread()

    def close(self, timeout: float = 30.0) -> bool:
        """Stop for good: requests waiting or generating are cancelled (their callers get the end of the stream),
        chores not yet begun are dropped, and later requests get a clear error. Waits up to `timeout` seconds for the
        step or chore under way to end; returns whether the thread has ended.

        Every scheduler is closed at interpreter exit: Python ends a daemon thread that is still inside torch by
        unwinding it, and torch's C++ frames turn that into an abort ("terminate called without an active
        exception") of a process that was otherwise ending cleanly.
        """
        with self._wake:
            self._closed = True
            for request in (*self._pending, *self._active):
                request.cancelled.set()
            self._chores.clear()
            thread = self._thread
            self._wake.notify_all()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _wake_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="servicebot-decode", daemon=True)
            self._thread.start()
        self._wake.notify()

    def _run(self) -> None:
        while True:  # `admit` is rebound before each wait's end, so no finished request stays referenced
            with self._wake:
                admit: list[Request] = []
                chore = None
                while not self._pending and not self._active:
                    if self._closed:
                        self._thread = None
                        return
                    if self._chores:
                        chore = self._chores.popleft()
                        break
                    if not self._wake.wait(timeout=IDLE_S) and not self._pending and not self._chores:
                        self._thread = None  # idle: let the thread go; the next submit starts another
                        return
                while self._pending and len(self._active) + len(admit) < self.max_batch:
                    admit.append(self._pending.popleft())
            if chore is not None:
                try:
                    with torch.inference_mode():
                        chore()
                except Exception:  # background work never stops the scheduler
                    log.exception("background chore failed")
                continue
            self._tick(admit)

    def _tick(self, admit: list[Request]) -> None:
        """Prefill the newcomers, then one decode step per model (its locals go, so finished models can be freed)."""
        for request in admit:
            self._guarded([request], self._start)
        groups: dict[int, list[Request]] = {}
        for request in self._active:  # sequences of a swapped-out model finish on the weights they began with
            groups.setdefault(id(request.model), []).append(request)
        for group in groups.values():
            self._guarded(group, self._step)

    def _guarded(self, requests: list[Request], work: Callable[[list[Request]], None]) -> None:
        try:
            with torch.inference_mode():
                work(requests)
        except BaseException as exc:  # one failed request never stops the scheduler or the others
            log.exception("generation failed")
            for request in requests:
                try:
                    self._finish(request, exc)
                except Exception:  # a caller that cannot even be told: drop it, keep serving the others
                    log.exception("could not report a failed request")

    def _start(self, requests: list[Request]) -> None:
        request = requests[0]
        if request.cancelled.is_set():
            self._finish(request)
            return
        engine = request.model.engine
        request.cache = cache = engine.new_cache(len(request.prompt) + request.max_new_tokens)
        if len(request.prompt) >= cache.capacity:
            raise PluginError(f"The conversation is too long for the model's {cache.capacity}-token context.")
        model, ids, store = request.model, request.prompt, request.model.blocks
        start, n = model.best_start(ids)
        if store is not None:  # a prefix ending inside a passage (two starting alike) stops before it
            n = min([n, *(a for a, b in request.spans if a < n < b)])
        if start is not None and n > 0:
            cache.copy_from(start, n)
            model.reused += n
        placed = [(a, store.get(ids[a:b])) for a, b in request.spans if a >= n] if store is not None else []
        if placed and store is not None:
            logits = engine.prefill_spliced(ids, cache, placed, model.recompute, store.context.tokens)
            model.reused += sum(block.length for _, block in placed)
        else:
            logits = engine.prefill(ids[n:], cache)
        request.model.remember(request.prompt, cache)
        if request.repetition_penalty != 1.0:
            request.seen = torch.tensor(sorted(set(request.prompt)))
        self._active.append(request)
        self._advance(request, _greedy([request], logits[None])[0])

    def _step(self, group: list[Request]) -> None:
        for request in [r for r in group if r.cancelled.is_set()]:  # a client went away: free its slot now
            self._finish(request)
            group.remove(request)
        if not group:
            return
        self.peak = max(self.peak, len(group))
        caches = [r.cache for r in group if r.cache is not None]
        logits = group[0].model.engine.decode([r.last for r in group], caches)
        for request, token in zip(group, _greedy(group, logits), strict=True):
            self._advance(request, token)

    def _advance(self, request: Request, token: int) -> None:
        """Take the request's next token (chosen by `_greedy`), emit its text, and end the request when it is done."""
        if request.cancelled.is_set():
            self._finish(request)
            return
        request.generated += 1
        if token in request.model.eos:
            self._finish(request)
            return
        request.last = token
        if request.seen is not None and not bool((request.seen == token).any()):
            request.seen = torch.cat((request.seen, torch.tensor([token])))
        request.emit(request.text.push(token))
        full = request.cache is not None and request.cache.length >= request.cache.capacity
        if request.text.stopped:
            self._finish(request)
        elif request.generated >= request.max_new_tokens or full:
            request.finish = "length"
            self._finish(request)

    def _finish(self, request: Request, error: BaseException | None = None) -> None:
        if request in self._active:
            self._active.remove(request)
        request.cache = None  # the slot's memory goes back now, not when the caller lets go
        if error is None and not request.cancelled.is_set():
            tail = request.text.flush()
            if tail:
                request.emit(tail)
        elif error is not None:
            request.emit(error)
        request.emit(END)


def _greedy(requests: list[Request], logits: torch.Tensor) -> list[int]:
    """Each request's next token: the arg-max of its row of `logits` ([batch, vocab]) after transformers' repetition
    penalty over its prompt and answer so far. The whole batch takes one gather, one scatter and one arg-max: done
    per request, these small operator calls cost about a tenth of an 8-sequence step."""
    logits = logits.contiguous()
    penalised = [(row, r) for row, r in enumerate(requests) if r.seen is not None]
    if penalised:
        vocab = logits.shape[-1]
        flat = logits.view(-1)
        at = torch.cat([r.seen + row * vocab for row, r in penalised if r.seen is not None])
        rates = {r.repetition_penalty for _, r in penalised}
        p: float | torch.Tensor = (
            rates.pop()
            if len(rates) == 1
            else torch.cat(
                [torch.full((len(r.seen),), r.repetition_penalty) for _, r in penalised if r.seen is not None]
            )
        )
        scores = flat[at]
        flat[at] = torch.where(scores < 0, scores * p, scores / p)
    return [int(t) for t in logits.argmax(-1).tolist()]


def eos_ids(tokenizer: Any, generation_config: Any, extra: Sequence[int] = ()) -> frozenset[int]:
    """Token ids that end an answer: the tokenizer's and the generation config's end-of-sequence ids."""
    ids = set(extra)
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, list | tuple):
            ids.update(int(i) for i in source)
    return frozenset(ids)
