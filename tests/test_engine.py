"""The fast decode engine and its scheduler on a tiny random Llama: same tokens as transformers, batching, stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.contracts import Message, Passage, Turn
from bot.errors import PluginError
from plugins.responders.engine import LlamaEngine, supports
from plugins.responders.hf import HFResponder
from plugins.responders.prompt import build_messages
from plugins.responders.textstream import TextStream

PASSAGES = [Passage("p#0", "Reset your password in Settings > Security. The link is valid for 30 minutes.", 0.9)]
QUESTIONS = ["forgot my password", "where is my parcel", "the camera is offline again", "cancel my plan please"]


def turn(text: str) -> Turn:
    return Turn((Message("user", text),))


def responder(model: Path, **kw: Any) -> HFResponder:
    return HFResponder(HFResponder.Config(model=str(model), **kw))


@pytest.fixture(scope="module")
def hf(tiny_llama: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama).eval(), AutoTokenizer.from_pretrained(tiny_llama)


def prompt_ids(tok: Any, text: str) -> list[int]:
    enc = tok.apply_chat_template(build_messages(turn(text), PASSAGES), add_generation_prompt=True, return_dict=True)
    return list(enc["input_ids"])


def engine_greedy(engine: LlamaEngine, ids: list[int], n: int) -> list[int]:
    cache = engine.new_cache(len(ids) + n)
    out = [int(engine.prefill(ids, cache).argmax())]
    while len(out) < n:
        out.append(int(engine.decode([out[-1]], [cache])[0].argmax()))
    return out


def hf_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
    return [int(t) for t in out[0, len(ids) :]]


async def answer(r: HFResponder, text: str) -> str:
    return "".join([d async for d in r.stream(turn(text), PASSAGES)])


def test_engine_runs_llama_models_only(hf: tuple[Any, Any]) -> None:
    model, _ = hf
    assert supports(model)
    assert not supports(object())


@pytest.mark.parametrize("text", QUESTIONS)
def test_fast_engine_greedy_tokens_equal_transformers_float32(hf: tuple[Any, Any], text: str) -> None:
    model, tok = hf
    ids = prompt_ids(tok, text)
    assert engine_greedy(LlamaEngine(model), ids, 24) == hf_greedy(model, ids, 24)


def test_prefix_cache_start_equals_cold_start(hf: tuple[Any, Any]) -> None:
    import torch

    model, tok = hf
    engine = LlamaEngine(model)
    ids = prompt_ids(tok, "forgot my password")
    prefix = engine.new_cache(20)
    engine.prefill(ids[:20], prefix)
    warm = engine.new_cache(len(ids) + 1)
    warm.copy_from(prefix)
    warm_logits = engine.prefill(ids[20:], warm)
    cold_logits = engine.prefill(ids, engine.new_cache(len(ids) + 1))
    assert torch.allclose(warm_logits, cold_logits, atol=1e-4)
    assert warm.tokens == ids


@pytest.mark.parametrize("quantize", ["int8", "fp16", "bf16"])
def test_quantized_engines_stay_close_to_float32(hf: tuple[Any, Any], quantize: str) -> None:
    import torch

    model, tok = hf
    ids = prompt_ids(tok, "where is my parcel")
    full = LlamaEngine(model).prefill(ids, LlamaEngine(model).new_cache(len(ids)))
    quant = LlamaEngine(model, quantize).prefill(ids, LlamaEngine(model, quantize).new_cache(len(ids)))  # type: ignore[arg-type]
    assert quant.dtype == torch.float32 and quant.shape == full.shape
    assert torch.nn.functional.cosine_similarity(quant, full, dim=0) > 0.98


def test_native_decode_step_builds_on_this_machine() -> None:
    from plugins.responders.native import library

    assert library() is not None  # CI machines have a C compiler and AVX2: the fast path must not silently vanish


@pytest.mark.parametrize("kv", ["float32", "float16"])
@pytest.mark.parametrize("batch", [1, 3, 9])  # 9: more sequences than the kernel multiplies per weight row
def test_native_decode_steps_equal_the_torch_steps(hf: tuple[Any, Any], batch: int, kv: str) -> None:
    import torch

    model, tok = hf
    native, plain = LlamaEngine(model, "fp16", kv=kv), LlamaEngine(model, "fp16", native=False, kv=kv)  # type: ignore[arg-type]
    assert native.native and not plain.native
    prompts = [prompt_ids(tok, QUESTIONS[i % len(QUESTIONS)])[: 30 + 7 * i] for i in range(batch)]  # ragged
    caches = {}
    for name, engine in (("native", native), ("plain", plain)):
        caches[name] = [engine.new_cache(len(p) + 12) for p in prompts]
        for p, cache in zip(prompts, caches[name], strict=True):
            engine.prefill(p, cache)
    tokens = [p[-1] for p in prompts]
    for _ in range(12):
        a, b = native.decode(tokens, caches["native"]), plain.decode(tokens, caches["plain"])
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
        tokens = [int(t) for t in b.argmax(-1)]
    # The keys and values written agree too: float16 caches hold the same numbers rounded the same way, up to one
    # float16 step where the two paths' float32 results straddle a rounding boundary.
    tol = 1e-5 if kv == "float32" else 2e-3
    for x, y in zip(caches["native"], caches["plain"], strict=True):
        assert x.length == y.length and x.tokens == y.tokens
        for mine, theirs in zip(x.keys + x.values, y.keys + y.values, strict=True):
            assert mine.dtype == theirs.dtype == getattr(torch, kv)
            assert torch.allclose(mine[:, : x.length].float(), theirs[:, : y.length].float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("head", ["int8", "fp16"])
def test_output_projection_alone_can_be_quantized(hf: tuple[Any, Any], head: str) -> None:
    import torch

    model, tok = hf
    ids = prompt_ids(tok, "where is my parcel")
    full = LlamaEngine(model).prefill(ids, LlamaEngine(model).new_cache(len(ids)))
    engine = LlamaEngine(model, "none", head)  # type: ignore[arg-type]
    assert engine.head_quantize == head and type(engine.lm_head).__name__ == "Linear"
    assert type(engine.lm_head).__module__ != "torch.nn.modules.linear"  # a quantized Linear
    assert all(type(layer.qkv).__module__ == "torch.nn.modules.linear" for layer in engine.layers)  # blocks float32
    quant = engine.prefill(ids, engine.new_cache(len(ids)))
    assert torch.nn.functional.cosine_similarity(quant, full, dim=0) > 0.99


async def test_responder_fast_and_transformers_engines_give_the_same_answers(tiny_llama: Path) -> None:
    fast = responder(tiny_llama, max_new_tokens=20, quantize="none", kv_cache="float32")
    slow = responder(tiny_llama, max_new_tokens=20, engine="transformers")
    for text in QUESTIONS:
        assert await answer(fast, text) == await answer(slow, text)
    assert fast._serving is not None and fast._serving.fast is not None and fast._serving.fast.prefix is not None


async def test_batched_answers_equal_one_at_a_time(tiny_llama: Path) -> None:
    single = responder(tiny_llama, max_new_tokens=24, quantize="none", max_batch=1)
    alone = [await answer(single, text) for text in QUESTIONS]
    batched = responder(tiny_llama, max_new_tokens=24, quantize="none", max_batch=4)
    together = await asyncio.gather(*(answer(batched, text) for text in QUESTIONS))
    assert list(together) == alone
    assert batched._scheduler.peak > 1  # they really were decoded in one batch


async def test_requests_beyond_max_batch_wait_for_a_slot(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=16, quantize="none", max_batch=2)
    answers = await asyncio.gather(*(answer(r, text) for text in QUESTIONS * 2))
    assert answers[:4] == answers[4:]
    assert r._scheduler.peak == 2


async def wait_idle(r: HFResponder, seconds: float = 5.0) -> float:
    start = time.perf_counter()
    while r._scheduler.active and time.perf_counter() - start < seconds:
        await asyncio.sleep(0.01)
    return time.perf_counter() - start


async def test_client_going_away_frees_its_slot(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=1500, repetition_penalty=1.0)
    stream = r.stream(turn("forgot my password"), PASSAGES)
    assert isinstance(stream, AsyncGenerator)
    await stream.__anext__()
    assert r._scheduler.active == 1
    await stream.aclose()  # the client went away
    assert await wait_idle(r) < 5 and r._scheduler.active == 0


async def test_timeout_ends_the_request_and_frees_its_slot(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=1500, repetition_penalty=1.0, timeout_s=0.5)
    r.warm()
    received = []
    with pytest.raises(TimeoutError):
        async for delta in r.stream(turn("forgot my password"), PASSAGES):
            received.append(delta)
            await asyncio.sleep(0.1)  # a slow reader: the deadline covers the whole answer
    assert 1 <= len(received) <= 6
    assert await wait_idle(r) < 5 and r._scheduler.active == 0


@pytest.mark.parametrize("engine", ["fast", "transformers"])
async def test_stop_sequence_ends_the_answer_before_it(tiny_llama: Path, engine: str) -> None:
    free = await answer(responder(tiny_llama, max_new_tokens=30, engine=engine), "where is my parcel")
    stop = free.strip()[6:9]
    assert len(stop) == 3 and stop in free
    stopped = await answer(responder(tiny_llama, max_new_tokens=30, engine=engine, stop=[stop]), "where is my parcel")
    assert stopped == free[: free.index(stop)]


async def test_too_long_conversation_is_a_clear_error_and_the_next_request_works(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=8)
    with pytest.raises(PluginError, match="too long for the model's"):
        await answer(r, "password reset link " * 1500)
    assert r._scheduler.active == 0
    assert await answer(r, "forgot my password") == await answer(r, "forgot my password")


async def test_a_finished_answer_keeps_no_model_alive(tiny_llama: Path) -> None:
    import gc
    import weakref

    r = responder(tiny_llama, max_new_tokens=4)
    await answer(r, "forgot my password")
    assert r._serving is not None and r._serving.fast is not None
    engine = weakref.ref(r._serving.fast.engine)
    del r
    for _ in range(100):  # the scheduler thread may still be returning from the step that ended the answer
        gc.collect()
        if engine() is None:
            break
        await asyncio.sleep(0.05)
    assert engine() is None  # the idle scheduler thread holds no finished request (nor its model)


def test_text_stream_holds_back_a_possible_stop_sequence(hf: tuple[Any, Any]) -> None:
    _, tok = hf
    ids = tok("Reset your password. END of answer")["input_ids"]
    text = TextStream(tok, ["END"])
    deltas = []
    for token in ids:
        deltas.append(text.push(token))
        if text.stopped:
            break
    assert text.stopped and "".join(deltas) + text.flush() == "Reset your password. "
    assert len(deltas) <= len(ids)


@pytest.mark.slow
async def test_default_model_fast_engine_answers_like_generate() -> None:
    fast = HFResponder(HFResponder.Config(max_new_tokens=24))  # the default: fp16 weights, float32 arithmetic
    assert fast.config.quantize == "fp16"
    slow = HFResponder(HFResponder.Config(max_new_tokens=24, engine="transformers"))
    for text in QUESTIONS[:2]:
        assert await answer(fast, text) == await answer(slow, text)


def test_an_abandoned_answer_on_a_closed_event_loop_does_not_stop_the_scheduler(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=300, repetition_penalty=1.0)

    async def first_delta_only() -> None:
        stream = r.stream(turn("forgot my password"), PASSAGES)
        await stream.__anext__()  # abandoned without aclose: the loop closes while it is still generating

    asyncio.run(first_delta_only())
    assert asyncio.run(answer(r, "where is my parcel")) is not None
    assert r._scheduler._thread is None or r._scheduler._thread.is_alive()


async def test_prompts_sharing_passages_reuse_the_cached_part_and_answer_the_same(tiny_llama: Path) -> None:
    # The prompt cache alone (passage blocks, tested in test_passage_blocks.py, would reuse passages too).
    cold = responder(tiny_llama, max_new_tokens=16, quantize="none", prompt_cache=0, passage_cache_mb=0)
    warm = responder(tiny_llama, max_new_tokens=16, quantize="none", prompt_cache=2, passage_cache_mb=0)
    for text in ["forgot my password", "forgot my password again", "where is my parcel", "forgot my password"]:
        assert await answer(warm, text) == await answer(cold, text)
    fast_cold, fast_warm = cold._serving.fast, warm._serving.fast  # type: ignore[union-attr]
    assert fast_cold is not None and fast_warm is not None and fast_warm.prefix is not None
    system = fast_warm.prefix.length
    assert fast_cold.reused == 4 * system  # without the prompt cache only the system prompt is reused
    # With it, the passages shared with an earlier prompt are reused too: more than the system prompt each time
    # after the first, and the repeated question all but its last token.
    assert fast_warm.reused > fast_cold.reused + 3 * len(PASSAGES[0].text.split())
    assert len(fast_warm.recent) == 2  # the oldest prompt was let go


@pytest.mark.parametrize("engine", ["fast", "transformers"])
async def test_usage_counts_the_prompt_and_the_answer_and_says_why_it_ended(tiny_llama: Path, engine: str) -> None:
    from bot.contracts import Usage

    cut = responder(tiny_llama, max_new_tokens=5, repetition_penalty=1.0, engine=engine)
    usage = Usage()
    deltas = [d async for d in cut.stream_metered(turn("where is my parcel"), PASSAGES, usage)]
    prompt, _ = cut._prompt(turn("where is my parcel"), PASSAGES)
    assert usage.prompt_tokens == len(prompt) > 20
    assert usage.completion_tokens == 5 and len(deltas) <= 5
    assert usage.finish_reason == "length"  # the random model never ends on its own within 5 tokens
    # A stop sequence ends the answer: not cut off by the limit, though fewer tokens than the limit were written.
    free = "".join(deltas)
    stop = free.strip()[2:4]
    assert len(stop) == 2 and stop in free
    stopped = responder(tiny_llama, max_new_tokens=5, repetition_penalty=1.0, engine=engine, stop=[stop])
    usage = Usage()
    text = "".join([d async for d in stopped.stream_metered(turn("where is my parcel"), PASSAGES, usage)])
    assert text == free[: free.index(stop)] and usage.finish_reason == "stop" and 0 < usage.completion_tokens <= 5


def test_greedy_choice_for_a_batch_equals_choosing_row_by_row() -> None:
    import torch

    from plugins.responders.batcher import Request, _greedy

    def request(penalty: float, seen: list[int] | None) -> Request:
        r = Request(None, [], 4, None, print, penalty)  # type: ignore[arg-type]
        r.seen = torch.tensor(seen) if seen is not None else None
        return r

    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    rows = [request(1.3, [int(logits[0].argmax()), 3]), request(1.0, None), request(2.0, [int(logits[2].argmax())])]
    want = []
    for row, r in zip(logits.clone(), rows, strict=True):  # the penalty as transformers applies it, one row at a time
        if r.seen is not None:
            s = row[r.seen]
            row[r.seen] = torch.where(s < 0, s * r.repetition_penalty, s / r.repetition_penalty)
        want.append(int(row.argmax()))
    assert _greedy(rows, logits.clone()) == want
    assert want[0] != int(logits[0].argmax()) or want[2] != int(logits[2].argmax())  # a penalty changed a choice
    assert _greedy(rows[:1], logits[:1].clone()) == want[:1]  # one request, one penalty: the scalar path


EXIT_WHILE_GENERATING = """
import asyncio, sys
from bot.contracts import Message, Passage, Turn
from plugins.responders.hf import HFResponder

r = HFResponder(HFResponder.Config(model=sys.argv[1], engine=sys.argv[2], max_new_tokens=1500,
                                   repetition_penalty=1.0, passage_cache_mb=0, prompt_cache=0))
r.warm()


async def first_delta(i: int) -> None:
    passage = Passage("p", f"Note {i}. " + "Reset your password in Settings, then Security. " * 40, 0.9)
    async for _ in r.stream(Turn((Message("user", f"question {i}: forgot my password"),)), [passage]):
        return


async def main() -> None:
    tasks = [asyncio.create_task(first_delta(i)) for i in range(12)]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)  # the rest still wait or generate


asyncio.run(main())
print("left main", flush=True)
"""


@pytest.mark.parametrize("engine", ["fast", "transformers"])
def test_the_process_exits_cleanly_while_answers_are_still_generating(tiny_llama: Path, engine: str) -> None:
    # Python unwinds a daemon thread still inside torch at exit, which aborts the process (exit code 134,
    # "terminate called without an active exception"); the generating threads are stopped and awaited first.
    import subprocess
    import sys

    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", EXIT_WHILE_GENERATING, str(tiny_llama), engine],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "left main" in done.stdout, done.stderr[-2000:]
        assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]


async def drain(stream: AsyncIterator[str]) -> list[str]:
    return [d async for d in stream]


async def test_a_closed_scheduler_ends_what_it_holds_and_refuses_new_requests(tiny_llama: Path) -> None:
    r = responder(tiny_llama, max_new_tokens=1500, repetition_penalty=1.0, max_batch=1)
    generating = r.stream(turn("forgot my password"), PASSAGES)
    await generating.__anext__()
    waiting = asyncio.create_task(answer(r, "where is my parcel"))  # no slot: it waits its turn
    await asyncio.sleep(0.05)
    assert await asyncio.to_thread(r._scheduler.close, 10.0)  # the thread ended
    rest = await asyncio.wait_for(asyncio.ensure_future(drain(generating)), 10)
    assert len(rest) < 1500 and r._scheduler._thread is None  # cut short, with no error; the thread is gone
    assert await asyncio.wait_for(waiting, 10) == ""  # cancelled before it began: the end of the stream, no text
    with pytest.raises(PluginError, match="shutting down"):
        await answer(r, "cancel my plan please")
