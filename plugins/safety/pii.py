"""Finds personal data (e-mail, phone, payment card, IBAN, national ids) with validation, and redacts it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# Boundaries in ASCII terms, not `\b`: Python counts Chinese characters as word characters, and a customer writing
# Chinese puts no space before a number ("我的电话是13812345678", "卡号4111111111111111"), so `\b` found none of them.
_B, _E = r"(?<![A-Za-z0-9_])", r"(?![A-Za-z0-9_])"
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}" + _E)
_CARD = re.compile(_B + r"(?:\d[ -]?){12,18}\d" + _E)
_IBAN = re.compile(_B + r"[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}" + _E)
_PHONE = re.compile(r"(?<![A-Za-z0-9_+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}" + _E)
_US_SSN = re.compile(_B + r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}" + _E)
_UK_NINO = re.compile(
    _B + r"(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIOQUV])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]" + _E
)
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")
_CN_ID = re.compile(_B + r"\d{17}[\dXx]" + _E)


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by payment cards."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 mod-97 check."""
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def cn_id_ok(text: str) -> bool:
    """GB 11643 checksum of a PRC resident identity number."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(c) * w for c, w in zip(text[:17], weights, strict=True))
    return "10X98765432"[total % 11] == text[17].upper()


@dataclass(frozen=True)
class Finding:
    """One piece of personal data found in a text."""

    kind: str
    start: int
    end: int
    text: str


Check = Callable[[str], bool]
DETECTORS: list[tuple[str, re.Pattern[str], Check]] = [
    ("email", _EMAIL, lambda s: True),
    ("iban", _IBAN, iban_ok),
    ("national_id", _CN_ID, cn_id_ok),
    ("payment_card", _CARD, lambda s: 13 <= len(re.sub(r"\D", "", s)) <= 19 and luhn_ok(re.sub(r"\D", "", s))),
    ("national_id", _US_SSN, lambda s: True),
    ("national_id", _UK_NINO, lambda s: True),
    ("phone", _PHONE, lambda s: 9 <= len(re.sub(r"\D", "", s)) <= 15 and not _DATE.search(s)),  # "2024-05-06 12:30"
]
LABELS = {
    "email": "e-mail address",
    "phone": "phone number",
    "payment_card": "payment card number",
    "iban": "bank account number (IBAN)",
    "national_id": "national ID number",
}
LABELS_ZH = {  # what the customer is told was removed, when they write Chinese
    "email": "电子邮箱地址",
    "phone": "电话号码",
    "payment_card": "银行卡号",
    "iban": "银行账号（IBAN）",
    "national_id": "身份证号码",
}


def find_pii(text: str, kinds: set[str] | None = None) -> list[Finding]:
    """All validated personal data in `text`, earliest first, never overlapping."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, check in DETECTORS:
        if kinds is not None and kind not in kinds:
            continue
        for m in pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e in taken) or not check(m.group(0)):
                continue
            taken.append((m.start(), m.end()))
            found.append(Finding(kind, m.start(), m.end(), m.group(0)))
    return sorted(found, key=lambda f: f.start)


def redact(text: str, findings: list[Finding]) -> str:
    """Replace each finding with a typed placeholder such as [payment card number removed]."""
    out, last = [], 0
    for f in findings:
        out += [text[last : f.start], f"[{LABELS[f.kind]} removed]"]
        last = f.end
    return "".join(out) + text[last:]
