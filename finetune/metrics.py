"""Answer-quality measures: token F1 and containment against a reference answer, and cited passage numbers."""

from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"[a-z0-9]+")
_CITE = re.compile(r"\[(\d+)\]")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; citation markers like [1] are not words of the answer."""
    return _TOKEN.findall(_CITE.sub(" ", text.lower()))


def token_f1(answer: str, reference: str) -> float:
    """SQuAD-style token F1 between an answer and the reference answer."""
    a, r = tokens(answer), tokens(reference)
    common = sum((Counter(a) & Counter(r)).values())
    if not a or not r or not common:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def containment(answer: str, reference: str) -> float:
    """The share of the reference's distinct tokens that the answer contains."""
    r = set(tokens(reference))
    return len(r & set(tokens(answer))) / len(r) if r else 0.0


def citations(answer: str) -> list[int]:
    """Passage numbers cited in an answer, in order, without repeats."""
    out: list[int] = []
    for n in (int(m) for m in _CITE.findall(answer)):
        if n not in out:
            out.append(n)
    return out
