"""The `hf` responder: a local causal LM on a fast batched CPU engine (or `generate`), live adapter switching."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Message, Passage, Turn, Usage
from bot.errors import PluginError
from plugins.responders import adapters
from plugins.responders.batcher import END, Model, Request, Scheduler, eos_ids, start_stoppable
from plugins.responders.blocks import BlockFolder, PassageBlocks, prune_folders
from plugins.responders.engine import LlamaEngine, supports
from plugins.responders.model_cache import resolve
from plugins.responders.prompt import SYSTEM, build_messages, passage_piece, passage_spans
from plugins.responders.textstream import TextStream

log = logging.getLogger(__name__)
BLOCK_FORMAT = 1  # raised when the engine's keys or values change meaning, so old block folders are not read


def _identity(path: Path) -> Any:
    """A model or adapter as its folder and the size and modification time of each file in it (or the name)."""
    if not path.is_dir():
        return str(path)
    files = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file())
    return [str(path.resolve()), files]


@dataclass(frozen=True)
class _Serving:
    """The model that answers now; replaced as a whole when the adapter changes."""

    model: Any  # a transformers model for `generate` (None when the fast engine serves)
    fast: Model | None
    adapter: Path | None
    method: str  # "base", "lora" or "prefix"


class HFResponder:
    """Generates grounded answers with a local or Hugging Face causal LM, optionally with a PEFT adapter."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "default"
        adapter: str | None = None  # a name in <data_dir>/adapters, or a folder
        max_new_tokens: int = Field(default=64, ge=1, le=4096)
        # Kept mild: a strong penalty pushes the model away from the passage wording it should reuse.
        repetition_penalty: float = Field(default=1.05, ge=1.0)
        system_prompt: str = SYSTEM
        engine: Literal["fast", "transformers"] = "fast"  # fast: Llama models only; others use generate
        # Fast-engine weights. fp16 (float16 weights, float32 arithmetic) decodes about twice as fast as float32
        # with the same greedy answers on the demo questions; int8 changed most answers (bench/generation.py).
        quantize: Literal["none", "int8", "fp16", "bf16"] = "fp16"
        # The output projection's format (`same` as quantize); see bench/generation.py for speed and agreement.
        head_quantize: Literal["same", "none", "int8", "fp16"] = "same"
        # fp16 decode steps in the compiled native step (plugins/responders/native), built with the system C
        # compiler on first use; without one (or with native: false) they run through torch: same answers, slower.
        native: bool = True
        # The KV caches' number format: float16 halves what a decode step reads from them (with 8 sequences of 600
        # tokens, as much as the weights); arithmetic stays float32. float32 for bit-for-bit `generate` agreement.
        kv_cache: Literal["float16", "float32"] = "float16"
        threads: int | None = Field(default=None, ge=1)
        max_batch: int = Field(default=8, ge=1, le=64)
        # KV caches of the last N prompts kept for reuse: a prompt sharing passages with one of them prefills only
        # what differs (about 16 MB each for the default model, float16 caches; 0 = only the system prompt is reused).
        prompt_cache: int = Field(default=4, ge=0, le=64)
        # Passage blocks: each passage's keys and values are computed once (after the system prompt) and spliced
        # into later prompts that quote it, in any order or company, so only the rest of the prompt is prefilled.
        # Memory for them in MB (0 = off: every prompt token is prefilled). See the README for what it changes.
        passage_cache_mb: int = Field(default=256, ge=0)
        # The share of a prompt's spliced passage tokens computed again, those whose values change most once the
        # passages before them are seen (1 = all: the same answers as without blocks, at no gain in speed).
        passage_recompute: float = Field(default=0.15, ge=0.0, le=1.0)
        # Blocks are also kept on disk under <data_dir>/blocks (one folder per model, adapter and system prompt), so
        # they outlive restarts and are shared by replicas; MB all those folders may hold together (0 = memory only).
        passage_disk_mb: int = Field(default=2048, ge=0)
        # `bot serve` hands every chunk of the knowledge index to the responder at start; their blocks are computed
        # while no customer is waiting (a request arriving meanwhile waits for at most one passage's computation).
        prepare_passages: bool = True
        stop: list[str] = []
        timeout_s: float = Field(default=60.0, gt=0)

    name = "hf"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        settings = getattr(ctx, "settings", None)
        data_dir = getattr(settings, "data_dir", None)
        self._root = adapters.adapters_root(data_dir)
        self._block_root = Path(data_dir) / "blocks" if data_dir is not None else None
        self._base: Any = None
        self._tok: Any = None
        self._serving: _Serving | None = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()  # `generate` runs one at a time: the CPU is shared
        self._scheduler = Scheduler(config.max_batch)
        self.concurrency = config.max_batch  # turns the web app lets answer at once (server.max_active_turns)

    def warm(self) -> None:
        """Load the model (converting the default one on first use) and the configured adapter."""
        with self._load_lock:
            if self._serving is None:
                self._base, self._tok = self._load()
                path = adapters.resolve(self.config.adapter, self._root) if self.config.adapter else None
                self._serving = self._build(path)

    def adapters(self) -> list[dict[str, Any]]:
        """Adapters in `<data_dir>/adapters` (and the active one): name, path, method, base model, metrics, active."""
        active = self._serving.adapter if self._serving else None
        return adapters.list_adapters(self._root, active)

    def use_adapter(self, name: str | None) -> None:
        """Serve with another adapter (a name or a folder; None = the base model) from the next request on.

        The new adapter is loaded and checked before anything changes; requests already generating finish
        with the weights they started with.

        Raises:
            PluginError: the adapter is missing, corrupt, or made for another base model (the old one keeps serving).
        """
        self.warm()
        serving = self._build(adapters.resolve(name, self._root) if name else None)
        with self._load_lock:
            self._serving = serving

    def _load(self) -> tuple[Any, Any]:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # fail fast instead of retrying an unreachable hub
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        path = resolve(self.config.model)
        try:
            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise PluginError(
                f"Model '{self.config.model}' could not be loaded: it is not a local model folder and is not in the "
                f"local Hugging Face cache ({type(exc).__name__})."
            ) from None
        model.eval()
        return model, tok

    def _build(self, adapter: Path | None) -> _Serving:
        model, method = (self._base, "base") if adapter is None else adapters.load(self._base, adapter)
        if self.config.engine != "fast" or method == "prefix" or not supports(model):
            return _Serving(model, None, adapter, method)
        engine = LlamaEngine(
            model, self.config.quantize, self.config.head_quantize, self.config.native, self.config.kv_cache
        )
        eos = eos_ids(self._tok, getattr(model, "generation_config", None))
        fast = Model(engine, eos, recent_size=self.config.prompt_cache, recompute=self.config.passage_recompute)
        prefix_ids = self._ids([{"role": "system", "content": self.config.system_prompt}], generation=False)
        if 0 < len(prefix_ids) < engine.max_positions:  # the fixed system prompt: computed once, copied per request
            prefix = engine.new_cache(len(prefix_ids))
            engine.prefill(prefix_ids, prefix)
            fast.prefix = prefix
            if self.config.passage_cache_mb > 0:
                fast.blocks = self._blocks(engine, prefix, adapter)
        return _Serving(None, fast, adapter, method)

    def _blocks(self, engine: LlamaEngine, prefix: Any, adapter: Path | None) -> PassageBlocks | None:
        """The passage-block store, its blocks computed after the opening of a one-passage prompt."""
        ids, spans = self._prompt(Turn((Message("user", "?"),)), [Passage("x", "x", 1.0)])
        lead = ids[: spans[0][0]] if spans else []
        if not lead or lead[: prefix.length] != prefix.tokens or len(lead) >= engine.max_positions:
            return None
        context = engine.new_cache(len(lead))
        context.copy_from(prefix)
        engine.prefill(lead[prefix.length :], context)
        folder = None
        if self._block_root is not None and self.config.passage_disk_mb > 0:
            path, budget = self._block_folder(lead, adapter), self.config.passage_disk_mb * 2**20
            prune_folders(path, budget)  # folders of earlier models, adapters or formats share the budget
            folder = BlockFolder(path, budget)
        return PassageBlocks(engine, context, self.config.passage_cache_mb * 2**20, folder)

    def _block_folder(self, context: list[int], adapter: Path | None) -> Path:
        """Where blocks computed after `context` with this model, adapter and weight format are kept on disk: the
        folder's name hashes all of them (and each weight file's size and time), so blocks are never taken from
        a model, adapter or system prompt they were not computed with."""
        assert self._block_root is not None
        what = {
            "format": BLOCK_FORMAT,
            "model": _identity(Path(resolve(self.config.model))),
            "adapter": _identity(adapter) if adapter is not None else None,
            "quantize": [self.config.quantize, self.config.head_quantize],
            "kv": self.config.kv_cache,  # a block's later tokens attended to the earlier ones in this format
            "context": context,
        }
        digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
        return self._block_root / digest

    def prepare(self, texts: Sequence[str]) -> int:
        """Queue the passage blocks of these passage texts (a knowledge base's chunks) to be computed, and kept on
        disk, whenever the engine is idle, so prompts quoting them skip their prefill from the first time.
        Returns how many were queued (0 with passage blocks or `prepare_passages` off)."""
        if not self.config.prepare_passages:
            return 0
        self.warm()
        serving = self._serving
        store = serving.fast.blocks if serving is not None and serving.fast is not None else None
        if store is None:
            return 0
        room = store.engine.max_positions - store.context.length  # a passage longer than the context never fits
        pieces = [ids for ids in (self._encode(passage_piece(t)) for t in dict.fromkeys(texts)) if 0 < len(ids) < room]
        done = [0]

        def compute(ids: list[int]) -> None:
            if self._serving is serving and store.prepare(ids):  # skipped once another adapter serves
                done[0] += 1

        for ids in pieces:
            self._scheduler.when_idle(functools.partial(compute, ids))
        self._scheduler.when_idle(lambda: log.info("passage blocks prepared: %d computed now", done[0]))
        return len(pieces)

    def _ids(self, messages: list[dict[str, str]], generation: bool = True) -> list[int]:
        enc = self._tok.apply_chat_template(messages, add_generation_prompt=generation, return_dict=True)
        ids = enc["input_ids"]
        return [int(i) for i in (ids[0] if ids and isinstance(ids[0], list) else ids)]

    def _prompt(self, turn: Turn, passages: Sequence[Passage]) -> tuple[list[int], list[tuple[int, int]]]:
        """The prompt's token ids and its passages' token ranges.

        With passage blocks on, the rendered prompt is tokenized piece by piece, cut at the passage texts, so each
        passage has the same tokens wherever it stands (the pieces meet at a space or a line break, where the
        tokenizer splits anyway).
        """
        messages = build_messages(turn, passages, self.config.system_prompt)
        if self.config.passage_cache_mb <= 0:
            return self._ids(messages), []
        rendered = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        done = 0
        for a, b in passage_spans(rendered, passages):
            ids += self._encode(rendered[done:a])
            spans.append((len(ids), len(ids) + len(body := self._encode(rendered[a:b]))))
            ids += body
            done = b
        ids += self._encode(rendered[done:])
        return ids, [(a, b) for a, b in spans if b > a]

    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self._tok(text, add_special_tokens=False)["input_ids"]]

    def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield one text delta per generated token; stops generating when the consumer goes away or times out."""
        return self.stream_metered(turn, passages, Usage())

    async def stream_metered(self, turn: Turn, passages: Sequence[Passage], usage: Usage) -> AsyncIterator[str]:
        """`stream`, filling `usage`: the prompt's tokens, the tokens generated (an end-of-answer token included)
        and `length` when the answer was cut off by `max_new_tokens` or the context."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        if self._serving is None:
            await asyncio.to_thread(self.warm)
        serving = self._serving
        assert serving is not None
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the caller's event loop has closed: nobody listens, so stop generating
                stop.set()

        prompt, spans = self._prompt(turn, passages)
        usage.prompt_tokens = len(prompt)
        text = TextStream(self._tok, self.config.stop)
        request: Request | None = None
        if serving.fast is not None:
            request = Request(
                serving.fast,
                prompt,
                self.config.max_new_tokens,
                text,
                emit,
                self.config.repetition_penalty,
                spans=spans if serving.fast.blocks is not None else [],
                cancelled=stop,
            )
            self._scheduler.submit(request)
        else:
            # Stopped and awaited at interpreter exit, as the scheduler is (see `Scheduler.close`).
            work = functools.partial(self._generate, serving.model, prompt, text, emit, stop, usage)
            start_stoppable(work, stop, "servicebot-generate")
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"The answer took longer than {self.config.timeout_s:g} s.")
                item = await asyncio.wait_for(queue.get(), left)
                if item is END:
                    if request is not None:  # END is emitted after the scheduler's last word on the request
                        usage.completion_tokens, usage.finish_reason = request.generated, request.finish
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()  # a client gone, a timeout or the end: the slot is freed before the next step

    def _generate(
        self,
        model: Any,
        prompt: list[int],
        text: TextStream,
        emit: Callable[[Any], None],
        stop: threading.Event,
        usage: Usage,
    ) -> None:
        """The `generate` path: other architectures and prefix-tuning adapters."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set() or text.stopped, dtype=torch.bool)

        class _Streamer:
            prompt_seen = False
            ended = False  # an end-of-answer token came

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # the first call carries the prompt
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    usage.completion_tokens += 1
                    if int(token) in eos:
                        self.ended = True
                    elif not text.stopped:
                        emit(text.push(int(token)))

            def end(self) -> None:
                tail = text.flush()
                if tail:
                    emit(tail)
                cut = usage.completion_tokens >= limit and not (self.ended or text.stopped or stop.is_set())
                usage.finish_reason = "length" if cut else "stop"

        eos = eos_ids(self._tok, getattr(model, "generation_config", None))
        limit = self.config.max_new_tokens
        try:
            ids = torch.tensor([prompt])
            with self._gen_lock, torch.inference_mode():
                if stop.is_set():  # the caller left (or the process is ending) while this waited its turn
                    return
                model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    repetition_penalty=self.config.repetition_penalty,
                    streamer=_Streamer(),
                    stopping_criteria=StoppingCriteriaList([_Stop()]),
                    pad_token_id=self._tok.eos_token_id,
                )
        except BaseException as exc:  # surfaced to the awaiting coroutine, never lost in the thread
            emit(exc)
        finally:
            emit(END)
