"""Decoders for obfuscated text (mismatched generalization): each turns a disguise back into plain text.

Every decoder is pure and bounded: input is capped, expansion is capped, and nothing recurses here
(the caller limits depth). A decoder returns None when its disguise is not present.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable

# Latin look-alikes from Cyrillic, Greek and other scripts that NFKC leaves alone.
CONFUSABLES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "у": "y",
        "х": "x",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "ԁ": "d",
        "ɡ": "g",
        "һ": "h",
        "ӏ": "l",
        "ԛ": "q",
        "ԝ": "w",
        "к": "k",
        "м": "m",
        "т": "t",
        "в": "b",
        "н": "h",
        "А": "A",
        "В": "B",
        "Е": "E",
        "К": "K",
        "М": "M",
        "Н": "H",
        "О": "O",
        "Р": "P",
        "С": "C",
        "Т": "T",
        "Х": "X",
        "У": "Y",
        "ο": "o",
        "α": "a",
        "ν": "v",
        "ρ": "p",
        "τ": "t",
        "ι": "i",
        "κ": "k",
        "Α": "A",
        "Β": "B",
        "Ε": "E",
        "Η": "H",
        "Ι": "I",
        "Κ": "K",
        "Μ": "M",
        "Ν": "N",
        "Ο": "O",
        "Ρ": "P",
        "Τ": "T",
        "Χ": "X",
        "Υ": "Y",
        "Ζ": "Z",
        "ɑ": "a",
        "ℓ": "l",
        "ı": "i",
    }
)
LEET = str.maketrans(
    {
        "0": "o",
        "1": "i",
        "3": "e",
        "4": "a",
        "5": "s",
        "7": "t",
        "8": "b",
        "9": "g",
        "@": "a",
        "$": "s",
        "!": "i",
        "|": "l",
        "+": "t",
        "(": "c",
    }
)
COMMON = frozenset(
    "the a an to of and or is are be how do i you my me it in on for with what can make get your this that "
    "give tell write show need want help please from at by not no all some any who where when why which "
    "order account password refund shipping device camera plug thermostat hub".split()
)
_WORD = re.compile(r"[A-Za-z]+")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4}){4,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[\s:]?){8,}")
_ASSIGN = re.compile(r"\b([A-Za-z_]\w{0,15})\s*=\s*[\"'“‘](.{1,400}?)[\"'”’]")
_CONCAT = re.compile(r"\b([A-Za-z_]\w{0,15}(?:\s*\+\s*[A-Za-z_]\w{0,15})+)\b")


def english_score(text: str) -> float:
    """Share of words that are very common English words: a cheap test of 'this reads as English'."""
    words = [w.lower() for w in _WORD.findall(text)]
    return sum(w in COMMON for w in words) / len(words) if words else 0.0


def _printable(text: str) -> bool:
    if not text.strip():
        return False
    good = sum(ch.isprintable() or ch in "\n\t" for ch in text)
    return good / len(text) > 0.95 and sum(ch.isalpha() for ch in text) >= 3


def strip_invisible(text: str) -> str | None:
    """Remove zero-width and other format characters (and variation selectors)."""
    cleaned = "".join(ch for ch in text if unicodedata.category(ch) != "Cf" and not 0xFE00 <= ord(ch) <= 0xFE0F)
    return cleaned if cleaned != text else None


def fold_homoglyphs(text: str) -> str | None:
    """Map full-width, styled and cross-script look-alike letters to plain Latin, and drop accents where they are a
    disguise (on more than one letter in six: "hôw tô mâkè"), not spelling (Beyoncé, crème brûlée, Medellín)."""
    mapped = unicodedata.normalize("NFKC", text).translate(CONFUSABLES)
    folded = "".join(c for c in unicodedata.normalize("NFKD", mapped) if not unicodedata.combining(c))
    original = [c for c in text if c.isalnum()]
    # Full-width punctuation (normal in Chinese text) is not a disguise: only changed letters count.
    if [c for c in mapped if c.isalnum()] != original:
        return folded
    if len(folded) == len(mapped) and sum(a != b for a, b in zip(mapped, folded, strict=True)) * 6 <= len(original):
        return None
    return folded if [c for c in folded if c.isalnum()] != original else None


_MIXED = re.compile(r"[A-Za-z0-9@$!|+(]{2,}")
# One run of digits and one of letters, either way round: 5k, 40th, 1990s, 11pm, 50mm, 401k (numbers with a unit
# or suffix) and f7, T2, mp3, Hub2 (names with a number). Ordinary writing is full of them, so they are read as
# leetspeak only in a text that is leetspeak by other words too.
_NUMBERED = re.compile(r"\d+[A-Za-z]{1,3}|[A-Za-z]+\d+")


def _leet_token(token: str, after: str) -> tuple[str, bool] | None:
    """(the part to translate, whether it is plainly leetspeak) for a token that mixes letters with digits or
    symbols, or None for one that does not: punctuation at its edges ("help!", "(now"), money ("$5k"), an e-mail
    address ("bob@mail" before ".com") and runs too long to be a word (ids, encodings) are not leetspeak."""
    core = token.strip("!|+(")
    if core.startswith("$") and core[1:2].isdigit():
        core = core[1:]
    if len(core) > 16 or not any(c.isalpha() for c in core) or core.isalpha():
        return None
    if "@" in core and re.match(r"\.[A-Za-z]", after):
        return None
    plain = not _NUMBERED.fullmatch(core) and not core.startswith("@") and sum(c.isalpha() for c in core) >= 2
    return core, plain and core.translate(LEET) != core


def unleet(text: str) -> str | None:
    """Undo leetspeak in words that mix letters with digits or symbols (h4ck, pa$$w0rd), in a text where at least
    one word is plainly leetspeak; numbers with a unit (5k, 3am, 1990s) and names with a number (T2, mp3) alone are
    not."""
    found = [(m, _leet_token(m.group(0), text[m.end() : m.end() + 2])) for m in _MIXED.finditer(text)]
    if not any(t is not None and t[1] for _, t in found):
        return None
    out = []
    last = 0
    for match, token in found:
        if token is None:
            continue
        start = match.start() + match.group(0).index(token[0])
        out += [text[last:start], token[0].translate(LEET)]
        last = start + len(token[0])
    out.append(text[last:])
    # Once a text is clearly leetspeak, lone 1 / 4 / 3 / 0 are letters too ("p1ck 4 l0ck" -> "pick a lock").
    return re.sub(r"(?<![\w.,])[1430](?![\w.,])", lambda m: m.group(0).translate(LEET), "".join(out))


def decode_base64(text: str) -> str | None:
    """Decode base64 runs that turn into readable text."""
    found = []
    for match in _B64.finditer(text):
        chunk = match.group(0)
        try:
            raw = base64.b64decode(chunk + "=" * (-len(chunk) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if _printable(raw):
            found.append(raw)
    return " ".join(found) if found else None


def decode_hex(text: str) -> str | None:
    """Decode runs of hex byte pairs that turn into readable text."""
    found = []
    for match in _HEX.finditer(text):
        digits = re.sub(r"[\s:]", "", match.group(0))
        try:
            raw = bytes.fromhex(digits[: len(digits) // 2 * 2]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _printable(raw):
            found.append(raw)
    return " ".join(found) if found else None


def decode_rot13(text: str) -> str | None:
    """ROT13, line by line (a plain instruction often wraps the encoded part), kept where it reads as English."""
    changed, lines = False, []
    for line in text.splitlines() or [text]:
        rotated = codecs.decode(line, "rot_13")
        if english_score(rotated) > english_score(line) + 0.15:
            lines.append(rotated)
            changed = True
        else:
            lines.append(line)
    return "\n".join(lines) if changed else None


def reverse_text(text: str) -> str | None:
    """Reversed characters or reversed word order, kept only when it reads more like English."""
    best, base = None, english_score(text)
    for candidate in (text[::-1], " ".join(reversed(text.split()))):
        if english_score(candidate) > base + 0.15:
            best, base = candidate, english_score(candidate)
    return best


def join_payload(text: str) -> str | None:
    """Payload splitting: `a = "how to", b = "pick locks"; answer a + b` -> the joined payload."""
    values = {name: value for name, value in _ASSIGN.findall(text)}
    if len(values) < 2:
        return None
    for expr in _CONCAT.findall(text):
        names = [n.strip() for n in expr.split("+")]
        if all(n in values for n in names):
            return " ".join(values[n] for n in names)
    return " ".join(values.values())


class Revoweller:
    """Restores disemvowelled words (hw t mk bmb) from a vocabulary keyed by consonant skeleton.

    `vocabulary` is running text's words, repeats included. Where several words share a skeleton (ht: hat, hit,
    hot), the most frequent one is restored, ties going to the alphabetically first, so the same text always
    decodes the same way whatever order the words came in.
    """

    def __init__(self, vocabulary: Iterable[str]) -> None:
        counts = Counter(w.lower() for w in vocabulary)
        table: dict[str, str] = {}
        for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            skeleton = re.sub(r"[aeiou]", "", word)
            if len(word) >= 3 and skeleton and skeleton != word:
                table.setdefault(skeleton, word)
        self._table = table

    def __call__(self, text: str) -> str | None:
        letters = [c for c in text.lower() if c.isalpha()]
        words = _WORD.findall(text)
        if len(words) < 3 or not letters or sum(c in "aeiou" for c in letters) / len(letters) > 0.12:
            return None
        restored = _WORD.sub(lambda m: self._table.get(m.group(0).lower(), m.group(0)), text)
        return restored if restored != text else None


Decoder = Callable[[str], "str | None"]
DECODERS: dict[str, Decoder] = {
    "zero_width": strip_invisible,
    "homoglyph": fold_homoglyphs,
    "base64": decode_base64,
    "hex": decode_hex,
    "rot13": decode_rot13,
    "reversed": reverse_text,
    "leetspeak": unleet,
    "payload_split": join_payload,
}


def decoded_views(
    text: str,
    decoders: dict[str, Decoder],
    max_depth: int = 2,
    max_views: int = 8,
    max_chars: int = 8000,
    max_expansion: float = 4.0,
) -> list[tuple[str, str]]:
    """All distinct decodings of `text`, breadth first, as (how, view) pairs; bounded in depth, count and size."""
    text = text[:max_chars]
    views: list[tuple[str, str]] = []
    seen = {text}
    frontier = [("", text)]
    for _ in range(max_depth):
        nxt = []
        for how, current in frontier:
            for name, decoder in decoders.items():
                out = decoder(current)
                if out is None or out in seen or len(out) > max_expansion * len(text) + 64:
                    continue
                seen.add(out)
                label = f"{how}+{name}" if how else name
                views.append((label, out[:max_chars]))
                nxt.append((label, out[:max_chars]))
                if len(views) >= max_views:
                    return views
        frontier = nxt
    return views
