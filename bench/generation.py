"""Generation speed of the `hf` responder on the default model: transformers vs our engine vs llama.cpp, one run.

Run: .venv/bin/python bench/generation.py [--threads 2] [--repeats 3] [--questions 8] [--skip-serve] [--prepare-kb]

Prints, with the same thread count for every engine and medians over --repeats runs:
  * single-stream time to first token on a ~600-token prompt and decode tokens/s for plain transformers
    `generate` (the baseline), our engine per weight format, and llama.cpp on the packaged GGUF file;
  * our speed as a ratio to llama.cpp's;
  * time to first token with passage blocks: the passages new to the store vs on disk (prepared ahead, as `bot
    serve` does for the knowledge base; --prepare-kb times that for the whole demo KB) vs in memory (asked about
    before, in another order) vs every token prefilled, alternately on the same prompt;
  * 8 concurrent requests through the responder's scheduler: aggregate tokens/s vs a single stream, with passage
    blocks off and on, as one burst of 8 and as 8 clients sending 4 requests each back to back (a steady load);
  * greedy-answer agreement with float32 transformers on demo questions (gold passages, our prompt builder);
  * peak RSS of a real `bot serve` with the default model after a few turns over HTTP.

llama.cpp comes from llama-cpp-python built from its PyPI source into var/bench-llamacpp-venv (not a dependency):
  python3.11 -m venv var/bench-llamacpp-venv
  CMAKE_BUILD_PARALLEL_LEVEL=2 var/bench-llamacpp-venv/bin/pip install --no-binary llama-cpp-python llama-cpp-python
Without it that row is skipped (and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "knowledge" / "demo"
LLAMACPP_PY = ROOT / "var" / "bench-llamacpp-venv" / "bin" / "python"
DECODE = 64  # tokens generated per decode measurement

LLAMACPP_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
path, threads, prompt, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=1024, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
print(json.dumps({"prompt_tokens": len(ids)}), flush=True)
for _ in sys.stdin:  # one measurement per line, so the caller can interleave it with its own
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    first = time.perf_counter() - t
    token = int(llm.sample(temp=0.0))
    t = time.perf_counter()
    for _ in range(n):
        llm.eval([token])
        token = int(llm.sample(temp=0.0))
    print(json.dumps({"ttft": first, "rate": n / (time.perf_counter() - t)}), flush=True)
"""


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def demo_cases(n: int) -> list[tuple[str, list[Any]]]:
    """Demo questions with their gold article as the passage (what the retriever returns at its best)."""
    from bot.contracts import Passage

    cases = []
    for line in (DEMO / "qa.jsonl").read_text().splitlines():
        row = json.loads(line)
        path = DEMO / "articles" / f"{row['article_ids'][0]}.md"
        if path.is_file():
            cases.append((row["question"], [Passage("p", path.read_text()[:2000], 0.9)]))
    return cases[:n]


def long_prompt(tok: Any, system: str, target: int = 600) -> tuple[list[int], list[dict[str, str]], list[Any]]:
    """A real grounded prompt of about `target` tokens: demo articles as passages plus a question."""
    from bot.contracts import Message, Passage, Turn
    from plugins.responders.prompt import build_messages

    texts = [p.read_text() for p in sorted((DEMO / "articles").glob("*.md"))]
    passages: list[Passage] = []
    messages: list[dict[str, str]] = []
    ids: list[int] = []
    for text in texts:
        words = text.split()
        for cut in range(len(words), 0, -10):
            trial = [*passages, Passage("p", " ".join(words[:cut]), 0.9)]
            messages = build_messages(Turn((Message("user", "how do i reset my password?"),)), trial, system)
            ids = list(tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"])
            if len(ids) <= target:
                passages = trial
                break
        if len(ids) >= target - 10:
            break
    return ids, messages, passages


def time_transformers(model: Any, ids: list[int]) -> tuple[float, float]:
    """Plain `generate`: TTFT from a 1-token run, decode rate from a DECODE-token run minus its first token."""
    import torch

    x = torch.tensor([ids])
    with torch.inference_mode():
        t = time.perf_counter()
        model.generate(x, max_new_tokens=1, do_sample=False, pad_token_id=0)
        first = time.perf_counter() - t
        t = time.perf_counter()
        model.generate(x, max_new_tokens=DECODE + 1, min_new_tokens=DECODE + 1, do_sample=False, pad_token_id=0)
        return first, DECODE / max(1e-9, time.perf_counter() - t - first)


def time_engine(engine: Any, prefix: Any, ids: list[int]) -> tuple[float, float]:
    """Our engine as a request runs it: copy the cached system prefix, prefill the rest, then decode."""
    t = time.perf_counter()
    cache = engine.new_cache(len(ids) + DECODE + 1)
    cache.copy_from(prefix)
    token = int(engine.prefill(ids[prefix.length :], cache).argmax())
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(DECODE):
        token = int(engine.decode([token], [cache])[0].argmax())
    return first, DECODE / (time.perf_counter() - t)


def time_blocks(responder: Any, passages: list[Any], question: str, mode: str) -> float:
    """TTFT of a prompt: every token prefilled (`prefilled`), or with passage blocks, its passages new to the store
    (`new`: computed now, as blocks), `stored` in memory, or read from the store's folder on `disk` (as after a
    restart, or once `bot serve` has prepared the knowledge base)."""
    from bot.contracts import Message, Turn

    served = responder._serving.fast
    store = served.blocks
    ids, spans = responder._prompt(Turn((Message("user", question),)), passages)
    folder = store.folder
    if mode in ("new", "disk"):
        store.clear()
    if mode == "new":
        store.folder = None
    try:
        t = time.perf_counter()
        cache = served.engine.new_cache(len(ids) + 1)
        cache.copy_from(served.prefix)
        if mode == "prefilled":
            served.engine.prefill(ids[cache.length :], cache)
        else:
            placed = [(a, store.get(ids[a:b])) for a, b in spans]
            served.engine.prefill_spliced(ids, cache, placed, served.recompute, store.context.tokens)
        return time.perf_counter() - t
    finally:
        store.folder = folder


def prepare_kb(responder: Any) -> tuple[int, float, float]:
    """Prepare the blocks of every demo knowledge-base chunk into the store's (empty) folder, as `bot serve` does
    at start: (blocks, seconds, MB on disk)."""
    from bot.config import load_settings
    from finetune.retriever import corpus

    store = responder._serving.fast.blocks
    texts = [c.text for c in corpus(load_settings())]
    t = time.perf_counter()
    queued = responder.prepare(texts)
    done = threading.Event()
    responder._scheduler.when_idle(done.set)
    done.wait()
    return queued, time.perf_counter() - t, store.folder.size / 2**20


class LlamaCpp:
    """llama.cpp in its own venv and process, measured on request (one line in, one JSON line out)."""

    def __init__(self, text: str, threads: int) -> None:
        from plugins.responders.model_cache import packaged_gguf

        args = [str(LLAMACPP_PY), "-c", LLAMACPP_SCRIPT, str(packaged_gguf()), str(threads), text, str(DECODE)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.prompt_tokens = json.loads(self.proc.stdout.readline())["prompt_tokens"]

    def measure(self) -> tuple[float, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        got = json.loads(self.proc.stdout.readline())
        return got["ttft"], got["rate"]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(60)


def decode_steps(engine: Any, prefix: Any, ids: list[int], batch: int, steps: int = 16) -> float:
    """Aggregate tokens/s of batched decode steps alone (prefill excluded): `batch` sequences of the long prompt."""
    first = engine.new_cache(len(ids) + steps + 1)
    first.copy_from(prefix)
    token = int(engine.prefill(ids[prefix.length :], first).argmax())
    caches = [first]
    for _ in range(batch - 1):
        caches.append(engine.new_cache(first.capacity))
        caches[-1].copy_from(first)
    tokens = [token] * batch
    t = time.perf_counter()
    for _ in range(steps):
        tokens = [int(x) for x in engine.decode(tokens, caches).argmax(-1)]
    return batch * steps / (time.perf_counter() - t)


async def concurrent(responder: Any, cases: list[tuple[str, list[Any]]], n: int) -> tuple[float, float]:
    """Aggregate tokens/s of `n` simultaneous requests, and of the same requests one after another.

    A first pass asks about every case's passages (so passage blocks, when on, are stored for both runs alike);
    each run words its questions differently, so neither reuses the other's whole prompts.
    """
    from bot.contracts import Message, Turn

    async def one(question: str, passages: list[Any]) -> int:
        return len([d async for d in responder.stream(Turn((Message("user", question),)), passages)])

    picked = [cases[i % len(cases)] for i in range(n)]
    for q, p in picked:
        await one(f"Earlier customer: {q}", p)
    t = time.perf_counter()
    tokens = sum([await one(q, p) for q, p in picked])
    single = tokens / (time.perf_counter() - t)
    t = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(f"Please: {q}", p) for q, p in picked)))
    return single, tokens / (time.perf_counter() - t)


async def clients(responder: Any, cases: list[tuple[str, list[Any]]], n: int, each: int) -> tuple[float, float]:
    """Aggregate tokens/s of `n` clients that each send `each` requests back to back (so `n` requests are in flight
    until the last ones), and of the same requests sent by one client. Answers end at different lengths, so a
    burst of `n` requests (`concurrent`) spends its tail on a shrinking batch; a steady load refills freed slots.
    """
    from bot.contracts import Message, Turn

    async def one(question: str, passages: list[Any]) -> int:
        return len([d async for d in responder.stream(Turn((Message("user", question),)), passages)])

    work = [(f"Customer {i}: {cases[i % len(cases)][0]}", cases[i % len(cases)][1]) for i in range(n * each)]
    for q, p in cases:  # every case's passages asked about once before, as in `concurrent`
        await one(f"Earlier customer: {q}", p)

    async def client(k: int, prefix: str) -> int:
        return sum([await one(prefix + q, p) for q, p in work[k::n]])

    t = time.perf_counter()
    tokens = 0
    for k in range(n):
        tokens += await client(k, "One: ")
    single = tokens / (time.perf_counter() - t)
    t = time.perf_counter()
    tokens = sum(await asyncio.gather(*(client(k, "Many: ") for k in range(n))))
    return single, tokens / (time.perf_counter() - t)


async def agreement(cases: list[tuple[str, list[Any]]], responders: dict[str, Any]) -> dict[str, float]:
    """Share of demo answers identical to float32 transformers' (greedy, same prompt)."""
    from bot.contracts import Message, Turn

    answers: dict[str, list[str]] = {}
    for name, r in responders.items():
        answers[name] = ["".join([d async for d in r.stream(Turn((Message("user", q),)), p)]).strip() for q, p in cases]
    ref = answers.pop("transformers")
    return {name: sum(a == b for a, b in zip(got, ref, strict=True)) / len(ref) for name, got in answers.items()}


async def follow_up_ttft(config: Any, cases: list[tuple[str, list[Any]]]) -> tuple[float, float]:
    """Median time to first token of a question whose passages an earlier question already brought, with the
    prompt cache off (0) and on (the default): what a customer asking about the same topic waits."""
    from bot.contracts import Message, Turn
    from plugins.responders.hf import HFResponder

    async def first(r: Any, question: str, passages: list[Any]) -> float:
        start = time.perf_counter()
        async with contextlib.aclosing(r.stream(Turn((Message("user", question),)), passages)) as stream:
            async for _ in stream:  # closed on leaving, so the scheduler stops this request at once
                break
        return time.perf_counter() - start

    out = []
    for size in (0, HFResponder.Config().prompt_cache):  # the prompt cache alone: passage blocks off
        r = HFResponder(config.model_copy(update={"prompt_cache": size, "max_new_tokens": 4, "passage_cache_mb": 0}))
        r.warm()
        times = []
        for question, passages in cases:
            await first(r, f"I have a question about this: {question}", passages)  # the earlier customer
            times.append(await first(r, question, passages))
        out.append(median(times))
    return out[0], out[1]


def serve_rss(turns: int, settle_s: float = 0.0) -> float:
    """Peak RSS (MiB) of a real `bot serve` with the default config after `turns` chat requests, sent `settle_s`
    after it is up (time for it to prepare the knowledge base's passage blocks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SERVICEBOT_API_KEYS": "bench-key"}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "bot"), "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=2)
                break
            except OSError:
                time.sleep(1)
        time.sleep(settle_s)
        for q, _ in demo_cases(turns):
            body = json.dumps({"model": "servicebot", "messages": [{"role": "user", "content": q}]}).encode()
            req = urllib.request.Request(
                f"{base}/v1/chat/completions",
                body,
                {"Content-Type": "application/json", "Authorization": "Bearer bench-key"},
            )
            urllib.request.urlopen(req, timeout=300).read()
        status = Path(f"/proc/{proc.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024
    finally:
        proc.terminate()
        proc.wait(30)


def concurrency(best: Any, cases: list[tuple[str, list[Any]]], args: argparse.Namespace) -> None:
    """8 concurrent requests as a burst and as a steady load, per KV format, passage blocks off and on, and with
    blocks on per prompt-cache size; all in turn, `--concurrency-repeats` rounds."""
    from plugins.responders.hf import HFResponder

    best.config.max_new_tokens = DECODE
    sizes = [int(x) for x in args.prompt_cache.split(",") if x] or [best.config.prompt_cache]
    setups = []
    for kv in args.concurrency_kv.split(","):
        setups.append((f"passage blocks off, {kv} KV", {"passage_cache_mb": 0, "kv_cache": kv}))
        for size in sizes:
            name = f"passage blocks on (default), {kv} KV" + (f", prompt cache {size}" if len(sizes) > 1 else "")
            setups.append((name, {"kv_cache": kv, "prompt_cache": size}))
    for _ in range(args.concurrency_repeats):
        for name, update in setups:
            r = HFResponder(best.config.model_copy(update=update))
            r.warm()
            single, together = asyncio.run(concurrent(r, cases, 8))
            print(
                f"\n8 concurrent requests ({best.config.quantize}, {name}): aggregate {together:.1f} tok/s vs one "
                f"at a time {single:.1f} tok/s = {together / single:.2f}x (peak batch {r._scheduler.peak})"
            )
            single, together = asyncio.run(clients(r, cases, 8, 4))
            print(
                f"8 clients, 4 requests each back to back ({name}): aggregate {together:.1f} tok/s vs one client "
                f"{single:.1f} tok/s = {together / single:.2f}x",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument(
        "--formats",
        default="none,fp16/torch,fp16,int8",
        help="weight formats, BLOCKS[:HEAD][/torch][+kv32] (e.g. none:int8; /torch: decode steps without the native "
        "step; +kv32: float32 KV caches instead of the default float16)",
    )
    parser.add_argument(
        "--concurrency-kv",
        default="float16",
        help="KV cache formats the concurrency rows are measured with, in turn (e.g. float16,float32)",
    )
    parser.add_argument(
        "--prompt-cache",
        default="",
        help="prompt cache sizes the concurrency rows with passage blocks on are measured with, in turn (e.g. 4,16; "
        "default: the responder's)",
    )
    parser.add_argument("--concurrency-only", action="store_true", help="only the decode steps and concurrency rows")
    parser.add_argument("--concurrency-repeats", type=int, default=1, help="rounds of the concurrency rows")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--prepare-kb", action="store_true", help="time preparing every demo passage's block")
    parser.add_argument("--batch-only", action="store_true", help="only batched decode steps, 1 vs 8 sequences")
    args = parser.parse_args()

    import torch

    from bot.contracts import Message, Turn
    from plugins.responders.blocks import BlockFolder
    from plugins.responders.hf import HFResponder

    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, repeats {args.repeats}, decode {DECODE} tokens", flush=True)
    ref = HFResponder(HFResponder.Config(engine="transformers", threads=args.threads, timeout_s=3600))
    ref.warm()
    model, tok = ref._base, ref._tok
    ids, messages, passages = long_prompt(tok, ref.config.system_prompt)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    print(f"prompt {len(ids)} tokens", flush=True)

    fast: dict[str, Any] = {}
    for fmt in args.formats.split(","):
        weights, _, kv = fmt.partition("+")
        spec, _, path = weights.partition("/")  # e.g. none:int8 = float32 blocks, int8 output projection
        blocks, _, head = spec.partition(":")
        config = HFResponder.Config(
            quantize=blocks,  # type: ignore[arg-type]
            head_quantize=head or "same",  # type: ignore[arg-type]
            native=path != "torch",
            kv_cache="float32" if kv == "kv32" else "float16",
            threads=args.threads,
            timeout_s=3600,
        )
        r = HFResponder(config)
        r.warm()
        assert r._serving is not None and r._serving.fast is not None and r._serving.fast.prefix is not None
        fast[fmt] = r
    for fmt, r in fast.items():
        served = r._serving.fast
        one, eight = [
            median([decode_steps(served.engine, served.prefix, ids, b) for _ in range(args.repeats)]) for b in (1, 8)
        ]
        step = ", native step" if served.engine.native else ""
        rates = f"8 sequences {eight:.1f} tok/s vs 1 sequence {one:.1f} = {eight / one:.2f}x"
        print(f"decode steps alone ({fmt}{step}): {rates}")
    if args.batch_only:
        return
    cases = demo_cases(args.questions)
    default = HFResponder.Config().quantize
    best = fast.get(default) or next(iter(fast.values()))
    if args.concurrency_only:
        concurrency(best, cases, args)
        return
    cpp = LlamaCpp(text, args.threads) if LLAMACPP_PY.exists() else None
    runs: dict[str, list[tuple[float, float]]] = {}
    for i in range(args.repeats):  # engines in rotation, so the shared machine's noise hits them alike
        runs.setdefault("transformers generate (baseline)", []).append(time_transformers(model, ids))
        for fmt, r in fast.items():
            served = r._serving.fast
            runs.setdefault(f"our engine, {fmt} weights", []).append(time_engine(served.engine, served.prefix, ids))
        if cpp is not None:
            runs.setdefault(f"llama.cpp (Q4_1 GGUF, {cpp.prompt_tokens} tok)", []).append(cpp.measure())
        print(f"  repeat {i + 1} done", flush=True)
    if cpp is not None:
        cpp.close()
    rows = {name: (median([t for t, _ in xs]), median([r for _, r in xs])) for name, xs in runs.items()}
    cpp_row = next((v for k, v in rows.items() if k.startswith("llama.cpp")), None)

    print(f"\n{'single stream':<40} {'TTFT ms':>9} {'decode tok/s':>13}")
    for name, (ttft, rate) in rows.items():
        print(f"{name:<40} {ttft * 1000:9.0f} {rate:13.1f}")
    if cpp_row is None:
        print(f"llama.cpp: skipped (no {LLAMACPP_PY}; see the docstring for the build command)")
    else:
        for fmt in fast:
            ttft, rate = rows[f"our engine, {fmt} weights"]
            print(f"ours/llama.cpp ({fmt}): decode speed {rate / cpp_row[1]:.2f}x, TTFT speed {cpp_row[0] / ttft:.2f}x")

    store = best._serving.fast.blocks
    if store is not None:  # passage blocks vs every token prefilled, alternately
        share = best.config.passage_recompute
        questions = [q for q, _ in cases]
        times: dict[str, list[float]] = {}
        with tempfile.TemporaryDirectory(prefix="bench-blocks-") as folder:
            store.folder = BlockFolder(Path(folder), 2**40)
            if args.prepare_kb:
                n, seconds, mb = prepare_kb(best)
                print(f"\nprepared the blocks of {n} demo passages in {seconds:.1f} s, {mb:.0f} MB on disk")
            ids_, spans = best._prompt(Turn((Message("user", questions[0]),)), passages)
            for a, b in spans:  # on disk ahead, as bot serve prepares the knowledge base
                store.prepare(ids_[a:b])
            modes = (
                ("prefilled", "every token prefilled"),
                ("new", "passage blocks, passages new"),
                ("disk", "passage blocks, passages on disk"),
            )
            for i in range(args.repeats):
                question = questions[i % len(questions)]
                for mode, name in modes:
                    times.setdefault(name, []).append(time_blocks(best, passages, question, mode))
                other = f"Another customer: {question}"
                time_blocks(best, passages[::-1], other, "stored")  # stored by a question quoting them in another order
                stored = time_blocks(best, passages, question, "stored")
                times.setdefault("passage blocks, passages in memory", []).append(stored)
            store.folder = None
        print(f"\npassage blocks ({best.config.quantize}, recompute {share:.0%}), {len(ids)}-token prompt, TTFT ms:")
        for name, xs in times.items():
            print(f"  {name:<36} {median(xs) * 1000:7.0f}")
    concurrency(best, cases, args)

    cold, warm = asyncio.run(follow_up_ttft(best.config, cases))
    print(
        f"\nfollow-up question on passages already in the prompt cache ({best.config.quantize}): time to first "
        f"token {warm * 1000:.0f} ms vs {cold * 1000:.0f} ms with the cache off (median of {len(cases)})"
    )

    for r in (ref, *fast.values()):
        r.config.max_new_tokens = 48
    agree = asyncio.run(agreement(cases, {"transformers": ref, **fast}))
    print(f"\ngreedy answers identical to float32 transformers on {len(cases)} demo questions:")
    for fmt, share in agree.items():
        print(f"  our engine, {fmt} weights: {share:.0%}")
    if not args.skip_serve:
        print(f"\npeak RSS of bot serve (default config, 3 turns): {serve_rss(3):.0f} MiB")
        rss = serve_rss(3, 60)
        print(f"peak RSS of bot serve (default config, 3 turns after 60 s, passage blocks prepared): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
