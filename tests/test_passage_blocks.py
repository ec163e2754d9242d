"""Passage blocks: each passage's keys and values computed once and spliced into later prompts (tiny real Llama)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from bot.config import Settings
from bot.contracts import Message, Passage, Turn
from bot.registry import PluginContext
from plugins.responders.engine import LlamaEngine
from plugins.responders.hf import HFResponder
from plugins.responders.prompt import build_messages, passage_piece, passage_spans

PASSAGES = [
    Passage("a#0", "Reset your password in Settings > Security. The link is valid for 30 minutes.", 0.9),
    Passage("b#0", "Parcels ship within two working days; tracking appears once the courier scans it.", 0.8),
    Passage("c#0", "A camera shows offline when its Wi-Fi drops: restart the hub, then the camera.", 0.7),
]


def turn(text: str, *history: Message) -> Turn:
    return Turn((*history, Message("user", text)))


def responder(model: Path, data_dir: Path | None = None, **kw: Any) -> HFResponder:
    ctx = PluginContext(Settings(data_dir=data_dir)) if data_dir is not None else None
    r = HFResponder(HFResponder.Config(model=str(model), quantize="none", max_new_tokens=12, **kw), ctx)
    r.warm()
    return r


async def answer(r: HFResponder, text: str, passages: list[Passage], *history: Message) -> str:
    return "".join([d async for d in r.stream(turn(text, *history), passages)])


def test_spans_cover_each_passage_text_from_the_space_before_it() -> None:
    passages = [*PASSAGES[:2], Passage("d", "   ", 0.5), Passage("e", "\n  Indented text.\n", 0.4)]
    rendered = "<s>user\n" + build_messages(turn("q"), passages)[-1]["content"] + "</s>"
    spans = passage_spans(rendered, passages)
    assert [rendered[a:b] for a, b in spans] == [" " + PASSAGES[0].text, " " + PASSAGES[1].text, "Indented text."]
    assert [passage_piece(p.text) for p in passages if p.text.strip()] == [rendered[a:b] for a, b in spans]
    assert passage_piece("  ") == ""
    assert passage_spans("a template that rewrote the text", PASSAGES) == []
    assert passage_spans(rendered, []) == []


def test_spans_are_found_in_the_question_not_in_an_earlier_turn_quoting_the_passages() -> None:
    content = build_messages(turn("q"), PASSAGES)[-1]["content"]
    rendered = f"user: {content}\nassistant: ok\nuser: {content}"
    spans = passage_spans(rendered, PASSAGES)
    assert spans[0][0] > len(rendered) // 2
    assert rendered[spans[0][0] : spans[0][1]] == " " + PASSAGES[0].text


def test_prompt_cut_at_the_passages_has_the_same_tokens_as_the_whole_prompt(tiny_llama: Path) -> None:
    on, off = responder(tiny_llama), responder(tiny_llama, passage_cache_mb=0)
    history = (Message("user", "hello"), Message("assistant", "Hi, how can I help?"))
    for passages in (PASSAGES, PASSAGES[::-1], PASSAGES[:1], []):
        ids, spans = on._prompt(turn("where is my parcel?", *history), passages)
        assert ids == off._ids(build_messages(turn("where is my parcel?", *history), passages))
        assert len(spans) == len(passages)
        assert off._prompt(turn("x"), passages)[1] == []  # off: no spans, every token prefilled


def spliced(
    engine: LlamaEngine, prefix: Any, ids: list[int], blocks: list[Any], share: float, context: Any = None
) -> tuple[Any, Any]:
    cache = engine.new_cache(len(ids) + 1)
    cache.copy_from(prefix)
    return engine.prefill_spliced(ids, cache, blocks, share, context), cache


def test_recomputing_every_spliced_token_equals_a_full_prefill(tiny_llama: Path) -> None:
    r = responder(tiny_llama)
    fast = r._serving.fast  # type: ignore[union-attr]
    assert fast is not None and fast.prefix is not None and fast.blocks is not None
    engine = fast.engine
    ids, spans = r._prompt(turn("where is my parcel?"), PASSAGES)
    exact = engine.new_cache(len(ids) + 1)
    exact.copy_from(fast.prefix)
    want = engine.prefill(ids[fast.prefix.length :], exact)
    blocks = [(a, fast.blocks.get(ids[a:b])) for a, b in spans]
    got, cache = spliced(engine, fast.prefix, ids, blocks, 1.0)
    assert torch.allclose(got, want, atol=1e-5)
    for layer in range(len(engine.layers)):
        assert torch.allclose(cache.keys[layer][:, : len(ids)], exact.keys[layer][:, : len(ids)], atol=1e-5)
    assert cache.length == len(ids) and cache.tokens == ids
    # Without recomputing, the first layer's keys (they depend on token and position only) are the stored block's,
    # turned to where each passage landed: the same as computed in place, to float16 precision.
    _, cache = spliced(engine, fast.prefix, ids, blocks, 0.0)
    for a, b in spans:
        assert torch.allclose(cache.keys[0][:, a:b], exact.keys[0][:, a:b], atol=2e-3)
        assert torch.allclose(cache.values[0][:, a:b], exact.values[0][:, a:b], atol=2e-3)
    # The first passage was stored after the very context it has in this prompt: its keys agree at every layer.
    a, b = spans[0]
    assert torch.allclose(cache.keys[-1][:, a:b], exact.keys[-1][:, a:b], atol=2e-3)


def test_a_block_placed_right_after_its_own_context_is_taken_as_it_is(tiny_llama: Path) -> None:
    # float32 caches: a first-layer value computed again differs from its float16 copy in the block only by
    # rounding, which a float16 cache would round away (first-layer values do not depend on the context).
    r = responder(tiny_llama, kv_cache="float32")
    fast = r._serving.fast  # type: ignore[union-attr]
    assert fast is not None and fast.prefix is not None and fast.blocks is not None
    engine, context = fast.engine, fast.blocks.context.tokens
    for history, exact in (((), True), ((Message("user", "hi"), Message("assistant", "Hello!")), False)):
        ids, spans = r._prompt(turn("where is my parcel?", *history), PASSAGES[:1])
        (a, b), block = spans[0], fast.blocks.get(ids[spans[0][0] : spans[0][1]])
        full = engine.new_cache(len(ids) + 1)
        full.copy_from(fast.prefix)
        want = engine.prefill(ids[fast.prefix.length :], full)
        got, cache = spliced(engine, fast.prefix, ids, [(a, block)], 0.15, context)
        # The first passage of a prompt without history follows exactly the context its block was computed
        # after: its keys and values are used as stored (not even the first layer runs on them again).
        assert torch.equal(cache.values[0][:, a:b], block.values[0].float()) == exact
        assert (a == block.origin) == exact
        assert torch.allclose(got, want, atol=1e-2)  # the same prompt either way, to float16 precision
        assert int(got.argmax()) == int(want.argmax())


def test_a_block_that_does_not_fit_the_prompt_is_refused(tiny_llama: Path) -> None:
    r = responder(tiny_llama)
    fast = r._serving.fast  # type: ignore[union-attr]
    assert fast is not None and fast.prefix is not None and fast.blocks is not None
    ids, spans = r._prompt(turn("where is my parcel?"), PASSAGES)
    a, b = spans[0]
    block = fast.blocks.get(ids[a:b])
    for at in (0, len(ids) - block.length, len(ids)):  # over the cached prefix, over the last token, past the end
        with pytest.raises(ValueError, match="does not fit"):
            spliced(fast.engine, fast.prefix, ids, [(at, block)], 0.0)


async def test_passages_are_computed_once_and_reused_in_any_order_with_the_same_answers(tiny_llama: Path) -> None:
    r = responder(tiny_llama)
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store is not None
    first = await answer(r, "where is my parcel?", PASSAGES)
    assert (store.misses, store.hits, store.count) == (3, 0, 3)
    await answer(r, "my camera is offline", PASSAGES[::-1])
    assert (store.misses, store.hits) == (3, 3)  # the same three passages, in another order: none computed again
    # An answer depends on its prompt only, not on which prompts filled the store before it.
    assert await answer(responder(tiny_llama), "where is my parcel?", PASSAGES) == first
    assert await answer(r, "where is my parcel?", PASSAGES) == first


async def test_the_store_keeps_to_its_memory_budget_least_recently_used_out(tiny_llama: Path) -> None:
    probe = responder(tiny_llama)
    sizes = []
    for passage in PASSAGES:
        before = probe._serving.fast.blocks.size  # type: ignore[union-attr]
        await answer(probe, "hello", [passage])
        sizes.append(probe._serving.fast.blocks.size - before)  # type: ignore[union-attr]
    r = responder(tiny_llama, prompt_cache=0)  # so a repeated passage can only come from the store
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store is not None
    store.budget = sizes[2] + sizes[0]  # room for the last two asked about
    for i in (1, 2, 0):
        await answer(r, "tell me more", [PASSAGES[i]])
    assert store.size == store.budget and store.count == 2
    await answer(r, "and the camera?", [PASSAGES[2]])
    assert store.misses == 3
    await answer(r, "and the parcel?", [PASSAGES[1]])  # the least recently used went first
    assert store.misses == 4 and store.size <= store.budget


async def test_blocks_off_prefills_every_token(tiny_llama: Path) -> None:
    r = responder(tiny_llama, passage_cache_mb=0)
    fast = r._serving.fast  # type: ignore[union-attr]
    assert fast is not None and fast.blocks is None
    assert await answer(r, "where is my parcel?", PASSAGES)


async def test_a_passage_starting_like_one_in_an_earlier_prompt_is_still_spliced_whole(tiny_llama: Path) -> None:
    r = responder(tiny_llama)
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store is not None
    await answer(r, "where is my parcel?", PASSAGES[:1])
    alike = Passage("d#0", PASSAGES[0].text.replace("password", "router"), 0.9)  # the same first words
    await answer(r, "where is my parcel?", [alike])
    # The earlier prompt's cache covers the new passage's first words; the block is used all the same (two
    # computed, none skipped), so the answer is the one a fresh store gives.
    assert store.misses == 2
    assert await answer(r, "and now?", [alike]) == await answer(responder(tiny_llama), "and now?", [alike])


def idle(r: HFResponder) -> None:
    """Wait until the responder's scheduler has run every queued chore."""
    deadline = time.monotonic() + 60
    while r._scheduler.chores and time.monotonic() < deadline:
        time.sleep(0.02)
    done = threading.Event()
    r._scheduler.when_idle(done.set)
    assert done.wait(60)


async def test_blocks_kept_on_disk_serve_a_restarted_responder_with_the_same_answers(
    tiny_llama: Path, tmp_path: Path
) -> None:
    first = responder(tiny_llama, tmp_path)
    want = await answer(first, "where is my parcel?", PASSAGES)
    assert first._serving.fast.blocks.misses == 3  # type: ignore[union-attr]
    files = list((tmp_path / "blocks").glob("*/*.npz"))
    assert len(files) == 3
    again = responder(tiny_llama, tmp_path)  # a restart: nothing in memory, the blocks come from disk
    assert await answer(again, "where is my parcel?", PASSAGES[::-1]) == await answer(
        responder(tiny_llama), "where is my parcel?", PASSAGES[::-1]
    )
    store = again._serving.fast.blocks  # type: ignore[union-attr]
    assert (store.loads, store.misses) == (3, 0)
    # Another system prompt computes its blocks in another folder: they are never mixed.
    other = responder(tiny_llama, tmp_path, system_prompt="Answer briefly from the passages.")
    await answer(other, "where is my parcel?", PASSAGES[:1])
    assert other._serving.fast.blocks.misses == 1  # type: ignore[union-attr]
    assert len(list((tmp_path / "blocks").iterdir())) == 2
    # A damaged file is computed again (and the answer stays the same).
    for f in files:
        f.write_bytes(b"not a block")
    broken = responder(tiny_llama, tmp_path)
    assert await answer(broken, "where is my parcel?", PASSAGES) == want
    assert broken._serving.fast.blocks.misses == 3  # type: ignore[union-attr]


def test_the_disk_folder_keeps_to_its_budget_least_recently_used_out(tiny_llama: Path, tmp_path: Path) -> None:
    r = responder(tiny_llama, tmp_path)
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store is not None and store.folder is not None
    pieces = [r._encode(passage_piece(p.text)) for p in PASSAGES]
    extra = r._encode(passage_piece("Invoices are in Settings > Billing; download them as PDF files."))
    store.get(pieces[0])
    one = store.folder.size
    store.folder.budget = int(2.5 * one)  # room for two blocks of about this size
    for ids in pieces[1:]:
        time.sleep(0.02)
        store.get(ids)
    names = {store.folder._name(tuple(ids)): i for i, ids in enumerate(pieces)}
    kept = lambda: sorted(names.get(f.name, -1) for f in store.folder.path.glob("*.npz"))  # noqa: E731
    assert kept() == [1, 2] and store.folder.size <= store.folder.budget  # the first, least recently used, went
    store.clear()
    time.sleep(0.02)
    store.get(pieces[1])  # read from disk: now the most recently used
    assert store.loads == 1
    time.sleep(0.02)
    store.get(extra)
    assert kept() == [-1, 1]  # passage 2 was used longest ago
    # Preparing ahead only fills free room: it never pushes out blocks in use, and stops once the folder is full.
    assert not store.prepare(pieces[0]) and store.folder.full
    assert kept() == [-1, 1]


async def test_folders_of_other_models_or_formats_share_the_budget_least_recently_used_out(
    tiny_llama: Path, tmp_path: Path
) -> None:
    import os

    from plugins.responders.blocks import prune_folders

    root = tmp_path / "blocks"
    now = time.time()
    for age, name in ((3000, "old-adapter"), (2000, "old-format"), (1000, "other-prompt")):  # seconds since last use
        (root / name).mkdir(parents=True)
        block = root / name / "x.npz"
        block.write_bytes(b"0" * 600_000)
        os.utime(block, (now - age, now - age))
        os.utime(root / name, (now - age, now - age))
    os.utime(root / "old-format" / "x.npz")  # read just now: the most recently used of the three
    # A start with a 1 MB budget for all folders together: the two used longest ago go, whole.
    r = responder(tiny_llama, tmp_path, passage_disk_mb=1)
    assert [f.name for f in root.iterdir()] == ["old-format"]
    await answer(r, "where is my parcel?", PASSAGES[:1])  # the serving folder gets its first block
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store is not None and store.folder is not None and store.folder.path.is_dir()
    # Within the budget nothing goes; the serving folder itself is never deleted by its own pruning.
    assert prune_folders(store.folder.path, 2**20) == [] and (root / "old-format").is_dir()
    assert prune_folders(root / "old-format", 0) == [store.folder.path] and (root / "old-format").is_dir()


async def test_prepared_passages_are_computed_when_idle_and_then_only_spliced(tiny_llama: Path, tmp_path: Path) -> None:
    r = responder(tiny_llama, tmp_path)
    assert r.prepare([p.text for p in PASSAGES] + [PASSAGES[0].text, "   "]) == 3  # duplicates and blanks skipped
    idle(r)
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store.misses == 0 and store.count == 0  # prepared blocks go to disk, not into the memory in use
    assert len(list((tmp_path / "blocks").glob("*/*.npz"))) == 3
    got = await answer(r, "my camera is offline", PASSAGES[1:])
    assert (store.loads, store.misses) == (2, 0)
    assert got == await answer(responder(tiny_llama), "my camera is offline", PASSAGES[1:])
    assert r.prepare([p.text for p in PASSAGES]) == 3
    idle(r)
    assert len(list((tmp_path / "blocks").glob("*/*.npz"))) == 3  # already stored: nothing computed again
    assert responder(tiny_llama, tmp_path, prepare_passages=False).prepare([PASSAGES[0].text]) == 0


async def test_without_a_disk_folder_prepared_blocks_fill_memory_only_up_to_its_budget(tiny_llama: Path) -> None:
    r = responder(tiny_llama)  # no data dir: memory only
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert store is not None and store.folder is None
    store.budget = 1  # the first block fills it
    r.prepare([p.text for p in PASSAGES])
    idle(r)
    assert store.count == 1
    await answer(r, "where is my parcel?", PASSAGES[:1])
    assert (store.hits, store.misses) == (1, 0)


def test_a_service_prepares_the_blocks_of_every_chunk_in_its_index(tiny_llama: Path, tmp_path: Path) -> None:
    from conftest import DEMO

    from bot.config import GuardsSettings, KnowledgeSettings, PluginSpec
    from bot.service import Service

    kb = tmp_path / "kb"
    kb.mkdir()
    for name in ("reset-password.md", "camera-offline.md"):
        (kb / name).write_text((DEMO / "articles" / name).read_text(encoding="utf-8"), encoding="utf-8")
    settings = Settings(
        data_dir=tmp_path / "data",
        responder=PluginSpec(name="hf", config={"model": str(tiny_llama), "max_new_tokens": 4}),
        guards=GuardsSettings(input=[]),
        knowledge=KnowledgeSettings(source=kb),
    )
    service = Service.start(settings, warm=False)
    service.index.rebuild(kb)
    version, texts = service.pipeline.retriever.texts()  # type: ignore[attr-defined]
    assert len(texts) == service.index.status()["chunks"] and all(texts)
    assert service.prepare_passages() == len({passage_piece(t) for t in texts})
    r = service.pipeline.responder
    assert isinstance(r, HFResponder)
    idle(r)
    folder = tmp_path / "data" / "blocks"
    assert len(list(folder.glob("*/*.npz"))) == len({passage_piece(t) for t in texts})
    reply = service.ask_messages([Message("user", "How do I reset my password?")])
    store = r._serving.fast.blocks  # type: ignore[union-attr]
    assert reply.answer and store.loads >= 1 and store.misses == 0  # every passage quoted came from disk
    # A rebuild adds a document; the next turn notices the switch and its chunks are prepared in the background.
    article = (DEMO / "articles" / "track-order.md").read_text(encoding="utf-8")
    (kb / "track-order.md").write_text(article, encoding="utf-8")
    service.index.rebuild(kb)
    _, now = service.pipeline.retriever.texts()  # type: ignore[attr-defined]
    added = {passage_piece(t) for t in now} - {passage_piece(t) for t in texts}
    assert added
    service.ask_messages([Message("user", "Where is my parcel?")])
    deadline = time.monotonic() + 60
    while len(list(folder.glob("*/*.npz"))) < len({passage_piece(t) for t in now}) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(list(folder.glob("*/*.npz"))) == len({passage_piece(t) for t in now})
