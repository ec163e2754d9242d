"""SFT on the tiny random Llama: data building and mixing, held-out exclusion, LoRA and prefix runs, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bot.config import Settings
from bot.errors import ServicebotError
from finetune.data import DataConfig, build_examples, heldout_questions, loss_weights, normalise
from finetune.sft import SFTConfig, _searcher, load_config, train

DEMO_QA = Path(__file__).resolve().parent.parent / "knowledge" / "demo" / "qa.jsonl"


@pytest.fixture()
def settings(demo_service: Any, tmp_path: Path) -> Settings:
    """A private data dir for adapters and checkpoints, holding a copy of the demo index (built once)."""
    shutil.copytree(demo_service.settings.index_dir, tmp_path / "data" / "index")
    return demo_service.settings.model_copy(update={"data_dir": tmp_path / "data"})


def _tiny(tiny_llama: Path, **over: Any) -> SFTConfig:
    base = {
        "name": "t",
        "base_model": str(tiny_llama),
        "accumulate": 2,
        "checkpoint_every": 1,
        "eval_questions": 2,
        "lr": 1e-2,
        "epochs": 1,
        "lora": {"dropout": 0.0},
        "data": {"qa_file": str(DEMO_QA), "refusals": 2, "benign": 2, "articles": False},
        "weights": {"knowledge": 1.0, "safety": 0.5},
    }
    return SFTConfig(**{**base, **over})


def _cut(rows: int, tmp_path: Path) -> Path:
    """A QA file with the first `rows` lines of the demo file."""
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(DEMO_QA.read_text(encoding="utf-8").splitlines()[:rows]) + "\n", encoding="utf-8")
    return path


def test_training_set_never_contains_heldout_questions(demo_service: Any, tmp_path: Path) -> None:
    search, system, source = _searcher(demo_service.settings)
    weights = {"knowledge": 1.0, "articles": 0.5, "safety": 0.5}
    examples, report = build_examples(
        DataConfig(qa_file=DEMO_QA, refusals=10, benign=10),
        search,
        k=3,
        system=system,
        source=source,
        database=tmp_path / "none.db",
        weights=weights,
    )
    held = {normalise(r["question"]) for r in heldout_questions(DEMO_QA)}
    asked = {normalise(e.messages[-2].content.rsplit("answer:", 1)[-1]) for e in examples}
    assert held and not held & asked
    train_rows = sum(1 for r in map(json.loads, DEMO_QA.open()) if r["split"] == "train")
    unfound = [s for s in report.skipped if " no chunk of " in s]
    assert report.counts["knowledge"] + len(unfound) == train_rows and len(unfound) < 5
    assert report.counts["articles"] > 40 and report.counts["safety"] >= 10
    cited = [e for e in examples if e.source == "knowledge"]
    # Each knowledge answer cites a passage that really comes from the answering article.
    assert all(e.messages[-1].content.rstrip().endswith("]") for e in cited)


def test_extract_answers_quote_the_answering_passage_where_it_best_matches_the_reference(
    demo_service: Any, tmp_path: Path
) -> None:
    from finetune.data import grounded
    from finetune.metrics import token_f1
    from plugins.responders.extractive import passage_sentences

    qa = _cut(15, tmp_path)
    search, system, source = _searcher(demo_service.settings)
    cfg = DataConfig(qa_file=qa, refusals=0, benign=0, answers="extract")
    examples, _ = build_examples(
        cfg, search, k=3, system=system, source=source, database=tmp_path / "none.db", weights={"knowledge": 1.0}
    )
    rows = [r for r in map(json.loads, qa.open()) if r["split"] == "train"]
    assert len(examples) >= 8
    for example in examples:
        row = next(r for r in rows if r["question"] in example.messages[-2].content)
        quote, number = example.messages[-1].content.rsplit(" [", 1)
        found = grounded(search, row["question"], row["article_ids"], 3)
        assert found is not None
        passage = found[0][int(number.rstrip("]")) - 1]
        assert passage.doc_id in row["article_ids"]  # cited: a passage of an answering article
        sentences = passage_sentences(passage)
        windows = [" ".join(sentences[i : i + w]) for w in (1, 2) for i in range(len(sentences) - w + 1)]
        assert quote in windows  # quoted word for word, not paraphrased
        assert token_f1(quote, row["answer"]) >= max(token_f1(w, row["answer"]) for w in windows)


def test_loss_weights_make_each_source_count_by_its_weight() -> None:
    from bot.contracts import Message
    from finetune.data import Example

    msg = (Message("user", "q"), Message("assistant", "a"))
    examples = [Example(str(i), "knowledge", msg) for i in range(6)] + [Example("s", "safety", msg) for _ in range(2)]
    w = loss_weights(examples, {"knowledge": 1.0, "safety": 1.0})
    # Equal weights: both sources contribute the same total, however many examples each has.
    assert sum(w[:6]) == pytest.approx(sum(w[6:]))
    w2 = loss_weights(examples, {"knowledge": 3.0, "safety": 1.0})
    assert sum(w2[:6]) == pytest.approx(3 * sum(w2[6:]))


def test_malformed_lines_are_reported_and_skipped_or_fail_when_strict(demo_service: Any, tmp_path: Path) -> None:
    qa = _cut(6, tmp_path)
    qa.write_text(qa.read_text() + "{not json\n" + json.dumps({"question": "x"}) + "\n", encoding="utf-8")
    search, system, source = _searcher(demo_service.settings)
    cfg = DataConfig(qa_file=qa, refusals=0, benign=0)
    examples, report = build_examples(
        cfg, search, k=3, system=system, source=source, database=tmp_path / "none.db", weights={"knowledge": 1.0}
    )
    assert len(examples) == 4  # 6 lines, 2 of them held out
    assert [p.split(": ", 1)[0].rsplit(" ", 1)[-1] for p in report.problems] == ["7", "8"]
    with pytest.raises(ServicebotError, match="line 7"):
        build_examples(
            cfg,
            search,
            k=3,
            system=system,
            source=source,
            database=tmp_path / "none.db",
            weights={"knowledge": 1.0},
            strict=True,
        )


def test_empty_dataset_is_a_clear_error(demo_service: Any, tmp_path: Path) -> None:
    search, system, source = _searcher(demo_service.settings)
    with pytest.raises(ServicebotError, match="training set is empty"):
        build_examples(
            DataConfig(qa_file=_cut(0, tmp_path)),
            search,
            k=3,
            system=system,
            source=source,
            database=tmp_path / "none.db",
            weights={"knowledge": 1.0, "transcripts": 1.0},
        )


def test_accepted_transcripts_become_training_examples(demo_service: Any, tmp_path: Path) -> None:
    log = tmp_path / "accepted.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": "my plug blinks red"},
                {"role": "assistant", "content": "Hold the button for 10 seconds [1]."},
            ],
            "rating": "up",
        },
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "no"}], "rating": "down"},
        {"messages": [{"role": "assistant", "content": "wrong order"}]},
    ]
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    search, system, source = _searcher(demo_service.settings)
    examples, report = build_examples(
        DataConfig(qa_file=_cut(0, tmp_path), transcripts=[log]),
        search,
        k=3,
        system=system,
        source=source,
        database=tmp_path / "none.db",
        weights={"transcripts": 1.0},
    )
    assert [e.messages[-1].content for e in examples] == ["Hold the button for 10 seconds [1]."]
    assert "line 3" in report.problems[0]


def test_lora_run_saves_adapter_with_card_and_lowers_training_loss(
    settings: Settings, tiny_llama: Path, tmp_path: Path
) -> None:
    # max_length at the tiny model's limit: the sampled refusals come from our safety data, whose wording changes,
    # and with three passages the tiny 600-token vocabulary may need over 1,024 tokens for one of them.
    cfg = _tiny(
        tiny_llama,
        epochs=3,
        max_length=2048,
        data={"qa_file": str(_cut(12, tmp_path)), "refusals": 2, "benign": 0, "articles": False},
    )
    seen: list[tuple[int, int]] = []
    report = train(settings, cfg, lambda d, t: seen.append((d, t)), log=lambda _: None)
    folder = settings.data_dir / "adapters" / "t"
    card = json.loads((folder / "card.json").read_text())
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    assert card["data_hash"] == report["data_hash"] and card["seed"] == 7 and card["created"]
    assert card["examples"]["knowledge"] == 8 and card["examples"]["safety"] == 2, card["skipped"]
    assert seen[-1] == (30, 30)
    assert card["training"]["tokens"] > 0 and card["training"]["tokens_per_s"] > 0
    before, after = card["metrics"]["before"]["loss"], card["metrics"]["after"]["loss"]
    assert set(before) == {"helpful", "safe"}
    assert after["safe"] < before["safe"]  # three epochs of the same refusal: the safe objective must move
    assert not (settings.data_dir / "finetune-runs" / "t").exists()


def test_prefix_tuning_run_produces_a_loadable_adapter(settings: Settings, tiny_llama: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = _tiny(
        tiny_llama,
        method="prefix",
        data={"qa_file": str(_cut(6, tmp_path)), "refusals": 1, "benign": 0, "articles": False},
    )
    train(settings, cfg, log=lambda _: None)
    folder = settings.data_dir / "adapters" / "t"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), folder)
    assert model.peft_config["default"].peft_type.value == "PREFIX_TUNING"


def test_interrupted_run_resumes_from_checkpoint_and_matches_an_uninterrupted_one(
    settings: Settings, tiny_llama: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    qa = str(_cut(12, tmp_path))
    cfg = _tiny(tiny_llama, eval_questions=0, data={"qa_file": qa, "refusals": 2, "benign": 0, "articles": False})
    train(settings, cfg, log=lambda _: None)
    straight = load_file(str(settings.data_dir / "adapters" / "t" / "adapter_model.safetensors"))

    def interrupt(done: int, total: int) -> None:
        if done == 7:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a run

    with pytest.raises(KeyboardInterrupt):
        train(settings, cfg, interrupt, restart=True, log=lambda _: None)
    assert (settings.data_dir / "finetune-runs" / "t" / "checkpoint" / "state.json").is_file()
    messages: list[str] = []
    report = train(settings, cfg, log=messages.append)
    assert report["training"]["resumed_at"] == 6  # the last checkpoint: 3 optimizer steps of 2 examples
    assert any("Resuming" in m for m in messages)
    resumed = load_file(str(settings.data_dir / "adapters" / "t" / "adapter_model.safetensors"))
    assert all(float((straight[k] - resumed[k]).abs().max()) < 1e-5 for k in straight)


def test_config_typos_are_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "sft.yaml"
    path.write_text("lora: {rank: 8}\n", encoding="utf-8")
    with pytest.raises(ServicebotError, match="'lora.rank': unknown key"):
        load_config(path)
    assert load_config(None, "prefix").method == "prefix"
    path.write_text("weights: {knowledge: 1.0, safty: 0.5}\n", encoding="utf-8")
    with pytest.raises(ServicebotError, match="'weights': .*safty"):
        load_config(path)


def test_a_written_training_set_trains_exactly_like_the_one_built_in_place(
    settings: Settings, tiny_llama: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from finetune import prebuilt
    from finetune.sft import build_training_set

    qa = str(_cut(12, tmp_path))
    cfg = _tiny(tiny_llama, data={"qa_file": qa, "refusals": 2, "benign": 0, "articles": False})
    summary = prebuilt.save(build_training_set(settings, cfg), tmp_path / "set")
    assert summary["by_source"]["knowledge"] == 8 and summary["dev_examples"] == 4  # 2 held-out + 2 harmful
    direct = train(settings, cfg, log=lambda _: None)
    # Another data dir with no index at all: the set on disk is all the run needs.
    elsewhere = settings.model_copy(update={"data_dir": tmp_path / "gpu-box"})
    from_file = train(elsewhere, cfg, log=lambda _: None, data=tmp_path / "set")
    assert from_file["data_hash"] == direct["data_hash"]
    # build.json hashes the whole set; a run hashes what it trained on, without examples over max_length.
    from finetune.data import data_hash
    from finetune.prebuilt import load

    written = load(tmp_path / "set").examples
    assert summary["data_hash"] == data_hash(written)
    assert direct["data_hash"] == data_hash([e for e in written if e.id not in direct["skipped"]["too_long"]])
    assert from_file["metrics"]["before"] == direct["metrics"]["before"]
    assert from_file["data_from"] == str(tmp_path / "set") and direct["data_from"] == "built"
    a = load_file(str(settings.data_dir / "adapters" / "t" / "adapter_model.safetensors"))
    b = load_file(str(elsewhere.data_dir / "adapters" / "t" / "adapter_model.safetensors"))
    assert all(float((a[k] - b[k]).abs().max()) < 1e-6 for k in a)


def test_a_written_training_set_with_bad_lines_is_reported_skipped_or_refused(tmp_path: Path) -> None:
    from finetune import prebuilt

    with pytest.raises(ServicebotError, match="holds no train.jsonl"):
        prebuilt.load(tmp_path / "nowhere")
    folder = tmp_path / "set"
    folder.mkdir()
    good = {
        "id": "q1",
        "source": "knowledge",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello [1]"}],
    }
    no_target = {**good, "messages": good["messages"][:1] * 2}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "source": "gossip"}), json.dumps(no_target)]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ts = prebuilt.load(folder)
    assert [e.id for e in ts.examples] == ["q1"] and ts.dev == []
    assert [p.split(": ", 1)[0].rsplit(" ", 1)[-1] for p in ts.problems] == ["2", "3", "4"]
    assert "last message must be the assistant" in ts.problems[2]
    with pytest.raises(ServicebotError, match="line 2: invalid JSON"):
        prebuilt.load(folder, strict=True)
    (folder / "train.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(ServicebotError, match="is empty"):
        prebuilt.load(folder)
