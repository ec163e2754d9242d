"""The intent classifier behind the learned guards: one logistic head per objective (harmful, jailbreak,
offtopic, human, frustration, self_harm) and a category head over harmful text.

Features are hashed word and character n-grams (character n-grams carry Chinese without a tokenizer) joined
with the sentence embedding of the text (meaning beyond wording; the same embedder retrieval uses, so the
vector of a customer's question is computed once per turn). Trained by `train()` from
`dataset.build_dataset`; cached on disk keyed by a hash of the data and the embedder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from plugins.safety.dataset import OURS, PUBLIC, Example, build_dataset
from plugins.safety.gloss import fingerprint, with_gloss

log = logging.getLogger(__name__)
HEADS = ("harmful", "jailbreak", "offtopic", "human", "frustration", "self_harm")
VERSION = "4"  # 4: Chinese is read through its CC-CEDICT rendering
SHIPPED = Path(__file__).with_name("model")  # the classifier trained on our data and the public tune/ sets
TRAIN_CHARS = 400
OWN_WEIGHT = 4.0  # our own examples speak for the customers this bot serves; public sets are mostly one style
REG_C = 4.0  # inverse regularisation strength of the heads
Embed = Callable[[Sequence[str]], Any]
_LOCK = threading.Lock()
_LOADED: dict[str, IntentClassifier] = {}
_SOURCES: dict[tuple[Any, ...], IntentClassifier] = {}


def _prep(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()[:4000]


def _vectorizers() -> tuple[Any, Any]:
    from sklearn.feature_extraction.text import HashingVectorizer

    words = HashingVectorizer(
        n_features=2**16,
        ngram_range=(1, 2),
        alternate_sign=False,
        norm="l2",
        preprocessor=_prep,
        token_pattern=r"(?u)\b\w+\b",
    )
    chars = HashingVectorizer(
        n_features=2**16, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=False, norm="l2", preprocessor=_prep
    )
    return _Ngrams(words), _Ngrams(chars)


class _Ngrams:
    """A HashingVectorizer's rows (same analyzer, hash and L2 norm) without scikit-learn's per-call input checks,
    which cost about a millisecond a turn, more than the hashing itself."""

    def __init__(self, vectorizer: Any) -> None:
        from sklearn.feature_extraction import FeatureHasher

        self.vectorizer = vectorizer
        self._analyze = vectorizer.build_analyzer()
        self._hasher = FeatureHasher(vectorizer.n_features, input_type="string", alternate_sign=False)

    def __call__(self, texts: Sequence[str]) -> Any:
        import sklearn

        with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
            x = self._hasher.transform(self._analyze(t) for t in texts)
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        norms = np.sqrt(np.bincount(rows, weights=x.data**2, minlength=x.shape[0]))
        x.data /= norms[rows]  # a row with no n-grams has no entries to divide
        return x


@dataclass
class IntentClassifier:
    """Per-head probabilities for a batch of texts."""

    heads: dict[str, Any]
    categories: Any
    data_hash: str
    embed: Embed | None = field(default=None, repr=False)
    public: bool = False  # trained with the public tune/ sets as well as our own data
    review_key: str = ""  # the data's hash as the review model's card records it (see plugins/safety/review.py)

    def __post_init__(self) -> None:
        self._words, self._chars = _vectorizers()

    def __getstate__(self) -> dict[str, Any]:
        skip = ["embed", "_words", "_chars", "_recent"]
        if all(m is not None for m in self.heads.values()):  # a shipped model is only its stacked weights
            skip.append("_linear")
        state = {k: v for k, v in self.__dict__.items() if k not in skip}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.embed = None
        self.__post_init__()

    def _parts(self, texts: Sequence[str], vectors: Mapping[str, Any] | None = None) -> list[Any]:
        """Word n-grams (of the glossed text), character n-grams, and the embedding when there is an embedder:
        from `vectors` (by text) for text the gloss leaves as it is, else computed here."""
        glossed = [with_gloss(t) for t in texts]
        parts = [self._words(glossed), self._chars(texts)]
        if self.embed is not None:
            known = {t: vectors[t] for t, g in zip(texts, glossed, strict=True) if vectors and t in vectors and g == t}
            todo = [g for t, g in zip(texts, glossed, strict=True) if t not in known]
            made = iter(np.asarray(self.embed(todo)) if todo else ())
            parts.append(np.vstack([np.asarray(known[t]) if t in known else next(made) for t in texts]))
        return parts

    def features(self, texts: Sequence[str], vectors: Mapping[str, Any] | None = None) -> Any:
        """Sparse n-gram features joined with embeddings (computed here unless given)."""
        from scipy.sparse import csr_matrix, hstack

        return hstack([csr_matrix(p) for p in self._parts(texts, vectors)]).tocsr()

    def scores(self, texts: Sequence[str], vectors: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """{head: probability} for each text, plus `category` (the likeliest harm category) as a string key.
        `vectors` may give sentence vectors already made by the guards' embedder (by text), e.g. a knowledge
        passage's stored one.

        Recent results are cached by text: every learned guard of a turn reads the same scores.
        """
        cache: dict[str, dict[str, Any]] = self.__dict__.setdefault("_recent", {})
        found = {t: row for t in dict.fromkeys(texts) if (row := cache.get(t)) is not None}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, row in zip(missing, self._score(missing, vectors), strict=True):
                found[text] = row
                if len(cache) >= 1024:  # other threads use the cache too: read results from `found`, not it
                    try:
                        cache.pop(next(iter(cache), ""), None)
                    except RuntimeError:  # resized by another thread mid-iteration; trimming can wait
                        pass
                cache[text] = row
        return [found[t] for t in texts]

    def _stacked(self) -> tuple[list[str], Any, Any, list[str]]:
        """Every head's and every category's weights as one matrix, so a turn costs one sparse product instead
        of a dozen scikit-learn calls (the same numbers: a binary logistic head's probability is the sigmoid of
        its decision value, and the category is the one-vs-rest arg-max of theirs)."""
        cached = self.__dict__.get("_linear")
        if cached is None:
            heads = list(self.heads)
            models = [self.heads[h] for h in heads]
            classes: list[str] = []
            if self.categories is not None and len(self.categories.classes_) > 2:
                classes = [str(c) for c in self.categories.classes_]
                models += list(self.categories.estimators_)
            # Row-major: scipy multiplies a sparse row by a column-major matrix only after copying all of it
            # (16 MB, 2 ms a call).
            weights = np.ascontiguousarray(
                np.vstack([np.asarray(m.coef_, dtype=np.float64).reshape(-1) for m in models]).T
            )
            bias = np.array([float(np.ravel(m.intercept_)[0]) for m in models])
            cached = self.__dict__["_linear"] = (heads, weights, bias, classes)
        return cached

    def _score(self, texts: Sequence[str], vectors: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        parts = self._parts(texts, vectors)
        heads, weights, bias, classes = self._stacked()
        decision, start = bias, 0
        for part in parts:  # part by part: joining them into one sparse matrix costs more than the products
            decision = decision + np.asarray(part @ weights[start : start + part.shape[1]])
            start += part.shape[1]
        probs = 1.0 / (1.0 + np.exp(-decision[:, : len(heads)]))
        if classes:
            cats = [classes[j] for j in decision[:, len(heads) :].argmax(axis=1)]
        elif self.categories is not None:  # one or two categories: no per-class matrix to stack
            cats = [str(c) for c in self.categories.predict(self.features(texts, vectors))]
        else:
            cats = ["" for _ in texts]
        out: list[dict[str, Any]] = []
        for i in range(len(texts)):
            row: dict[str, Any] = {h: float(probs[i, j]) for j, h in enumerate(heads)}
            row["category"] = str(cats[i])
            out.append(row)
        return out


def data_hash(examples: list[Example], embedder_id: str = "none") -> str:
    """A stable fingerprint of the training data, embedder and classifier version."""
    h = hashlib.sha256(f"{VERSION}:{embedder_id}:{fingerprint()}".encode())
    for ex in sorted(examples, key=lambda e: e.text):
        h.update(f"{ex.text}\x00{sorted(ex.labels)}\x00{ex.category}\x01".encode())
    return h.hexdigest()[:16]


def train(examples: list[Example], embed: Embed | None, key: str, seed: int = 0) -> IntentClassifier:
    """Fit one balanced logistic head per objective, and a category head on harmful examples."""
    from sklearn.linear_model import LogisticRegression

    train_set = [e for e in examples if e.split == "train"]
    model = IntentClassifier({}, None, key, embed, public=any(e.source in PUBLIC for e in train_set))
    # Long jailbreak prompts show their style in the first few hundred characters; this keeps training quick.
    x = model.features([e.text[:TRAIN_CHARS] for e in train_set])
    weights = np.array([1.0 if e.source in PUBLIC else OWN_WEIGHT for e in train_set])
    for head in HEADS:
        y = np.array([head in e.labels for e in train_set], dtype=int)
        if y.sum() < 5:
            continue
        clf = LogisticRegression(C=REG_C, class_weight="balanced", solver="liblinear", random_state=seed)
        model.heads[head] = clf.fit(x, y, sample_weight=weights)
    harmful = [i for i, e in enumerate(train_set) if "harmful" in e.labels and e.category]
    if harmful:
        from sklearn.multiclass import OneVsRestClassifier

        cats = OneVsRestClassifier(LogisticRegression(C=4.0, solver="liblinear", random_state=seed))
        model.categories = cats.fit(x[harmful], [train_set[i].category for i in harmful])
    return model


def _cached(embed: Embed, path: Path) -> Embed:
    """Wrap `embed` with an on-disk cache of text vectors, so retraining after a data edit embeds only new text."""
    try:
        store: dict[str, Any] = pickle.loads(path.read_bytes()) if path.is_file() else {}
    except Exception:
        store = {}

    def run(texts: Sequence[str]) -> Any:
        keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        todo = [i for i, k in enumerate(keys) if k not in store]
        for start in range(0, len(todo), 256):
            batch = todo[start : start + 256]
            for i, vec in zip(batch, embed([texts[i] for i in batch]), strict=True):
                store[keys[i]] = np.asarray(vec, dtype=np.float32)
        if todo:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_bytes(pickle.dumps(store))
            path.with_suffix(".tmp").replace(path)
        return np.stack([store[k] for k in keys])

    return run


def own_data_hash(embedder_id: str) -> str:
    """A fingerprint of our own example files (not the public sets, not the demo questions) and the embedder."""
    h = hashlib.sha256(f"{VERSION}:{embedder_id}:{fingerprint()}".encode())
    for f in sorted(OURS.glob("*.jsonl")):
        h.update(f.name.encode() + b"\x00" + f.read_bytes())
    return h.hexdigest()[:16]


def shipped_files(embedder_id: str, folder: Path = SHIPPED) -> tuple[Path, Path]:
    """The card and weights of the shipped classifier for one embedder: each embedder setting (e.g. MiniLM in
    float32 and in int8) has its own, since the heads read that embedder's vectors."""
    slug = re.sub(r"[^A-Za-z0-9.+-]", "_", embedder_id)
    return folder / f"intent-{slug}.json", folder / f"intent-{slug}.npz"


def export(model: IntentClassifier, embedder_id: str, examples: int, folder: Path = SHIPPED) -> Path:
    """Write `model` as the shipped classifier for `embedder_id`: its stacked weights (float32, rows that are all
    zero left out) and a card saying what it was trained on."""
    heads, weights, bias, classes = model._stacked()
    rows = np.flatnonzero(np.any(weights != 0, axis=1)).astype(np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    card_file, weights_file = shipped_files(embedder_id, folder)
    np.savez_compressed(
        weights_file,
        rows=rows,
        weights=weights[rows].astype(np.float32),
        bias=bias,
        size=np.array([weights.shape[0]]),
    )
    card = {
        "data_hash": model.data_hash,
        "own_data": own_data_hash(embedder_id),
        "embedder": embedder_id,
        "version": VERSION,
        "heads": heads,
        "classes": classes,
        "examples": examples,
        "public": model.public,
    }
    card_file.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return folder


def shipped(key: str, embedder_id: str, any_public: bool, folder: Path = SHIPPED) -> IntentClassifier | None:
    """The shipped classifier if it was trained on exactly this data (`key`), or, with `any_public` (the public
    sets are not here), on our current example files with the public sets; else None."""
    card_file, weights_file = shipped_files(embedder_id, folder)
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
        if card["embedder"] != embedder_id or card["version"] != VERSION:
            return None
        if card["data_hash"] != key and not (
            any_public and card["public"] and card["own_data"] == own_data_hash(embedder_id)
        ):
            return None
        with np.load(weights_file) as z:
            weights = np.zeros((int(z["size"][0]), len(z["bias"])), dtype=np.float64)
            weights[z["rows"]] = z["weights"]
            bias = np.asarray(z["bias"], dtype=np.float64)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        log.warning("The shipped intent classifier in %s is unreadable (%s); training instead.", folder, exc)
        return None
    model = IntentClassifier(
        {h: None for h in card["heads"]}, None, str(card["data_hash"]), public=bool(card["public"])
    )
    model.__dict__["_linear"] = (list(card["heads"]), np.ascontiguousarray(weights), bias, list(card["classes"]))
    return model


def load(
    safety_data: Path | None,
    demo_qa: Path | None,
    cache_dir: Path,
    embed: Embed | None = None,
    embedder_id: str = "none",
    ship: Path | None = SHIPPED,
) -> IntentClassifier:
    """The trained classifier for this data and embedder: the shipped one (`ship`) when it fits, else from the
    cache, else trained now (about two minutes) and cached; `embed` is attached to the loaded model.

    The shipped classifier fits when it was trained on exactly this data, or when the public sets are absent
    (`safety_data` is None) and it was trained on our current example files plus the public sets: an install
    without the public data then keeps the guards the README's figures were measured with."""
    # Every learned guard (up to six in a chain) asks for the same model: read and hash the data once per source.
    source = (safety_data, demo_qa, embedder_id, _data_stamp(demo_qa))
    with _LOCK:
        if source in _SOURCES:
            return _SOURCES[source]
    examples = build_dataset(safety_data, demo_qa)
    key = data_hash(examples, embedder_id)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        path = cache_dir / f"intent-{key}.pkl"
        # The shipped classifier first: without the public sets it beats one trained on our examples alone.
        model = shipped(key, embedder_id, safety_data is None, ship) if ship is not None else None
        if model is not None:
            log.info("using the shipped intent classifier (%s)", ship)
        elif path.is_file():
            try:
                model = pickle.loads(path.read_bytes())
                model.public = any(e.source in PUBLIC for e in examples if e.split == "train")  # older caches lack it
            except Exception:  # a corrupt cache is retrained, never trusted
                log.warning("retraining: cached classifier %s is unreadable", path)
        if model is None:
            log.warning("training the intent classifier on %d examples (once; cached in %s)", len(examples), cache_dir)
            model = train(
                examples,
                _cached(embed, cache_dir / f"vectors-{embedder_id.replace('/', '_')}.pkl") if embed else None,
                key,
            )
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pickle.dumps(model))
            tmp.replace(path)
        model.embed = embed
        model.review_key = data_hash(examples, "review")
        _LOADED[key] = _SOURCES[source] = model
        return model


def _data_stamp(demo_qa: Path | None) -> tuple[float, ...]:
    """Modification times of our own data, so an edited example file still leads to retraining."""
    files = [*sorted(OURS.glob("*.jsonl")), *([demo_qa] if demo_qa is not None else [])]
    return tuple(f.stat().st_mtime for f in files if f.is_file())
