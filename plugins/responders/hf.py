"""The `hf` responder: a transformers causal LM with its chat template, streamed token by token."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.contracts import Passage, Turn
from bot.errors import PluginError
from plugins.responders.model_cache import resolve
from plugins.responders.prompt import SYSTEM, build_messages

_END = object()


class _TokenStream:
    """A transformers streamer that decodes incrementally and hands one delta per token to a callback."""

    def __init__(self, tokenizer: Any, emit: Any) -> None:
        self._tok, self._emit = tokenizer, emit
        self._ids: list[int] = []
        self._sent = 0
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        self._ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self._tok.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            self._emit("")
            return
        self._emit(text[self._sent :])
        self._sent = len(text)

    def end(self) -> None:
        """Called by generate(); the worker signals the end itself, after any error."""


class HFResponder:
    """Generates grounded answers with a local or Hugging Face causal LM, optionally with a PEFT adapter."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str = "default"
        adapter: str | None = None
        max_new_tokens: int = Field(default=64, ge=1, le=4096)
        # Kept mild: a strong penalty pushes the model away from the passage wording it should reuse.
        repetition_penalty: float = Field(default=1.05, ge=1.0)
        system_prompt: str = SYSTEM
        threads: int | None = Field(default=None, ge=1)
        timeout_s: float = Field(default=60.0, gt=0)

    name = "hf"

    def __init__(self, config: Config, ctx: Any = None) -> None:
        self.config = config
        self._model: Any = None
        self._tok: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()  # one generation at a time: the CPU is shared

    def warm(self) -> None:
        """Load the model (converting the default one on first use)."""
        with self._load_lock:
            if self._model is None:
                self._model, self._tok = self._load()

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
        if self.config.adapter:
            model = self._with_adapter(model, self.config.adapter)
        model.eval()
        return model, tok

    @staticmethod
    def _with_adapter(model: Any, adapter: str) -> Any:
        from peft import PeftModel

        try:
            return PeftModel.from_pretrained(model, adapter)
        except Exception as exc:
            raise PluginError(f"Adapter '{adapter}' could not be loaded: {exc}") from None

    def _generate(self, turn: Turn, passages: Sequence[Passage], emit: Any, stop: threading.Event) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool)

        streamer: _TokenStream | None = None
        try:
            self.warm()
            streamer = _TokenStream(self._tok, emit)
            messages = build_messages(turn, passages, self.config.system_prompt)
            enc = self._tok.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with self._gen_lock, torch.inference_mode():
                self._model.generate(
                    **enc,
                    max_new_tokens=self.config.max_new_tokens,
                    do_sample=False,
                    repetition_penalty=self.config.repetition_penalty,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Stop()]),
                    pad_token_id=self._tok.eos_token_id,
                )
        except BaseException as exc:  # surfaced to the awaiting coroutine, never lost in the thread
            emit(exc)
        finally:
            emit(_END)

    async def stream(self, turn: Turn, passages: Sequence[Passage]) -> AsyncIterator[str]:
        """Yield one text delta per generated token; stops generating if the consumer goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        worker = threading.Thread(target=self._generate, args=(turn, passages, emit, stop), daemon=True)
        worker.start()
        deadline = loop.time() + self.config.timeout_s
        try:
            while True:
                item = await asyncio.wait_for(queue.get(), max(0.01, deadline - loop.time()))
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
