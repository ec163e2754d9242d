"""Writing live changes back into the operator's YAML file, so a console edit survives a restart.

Only what changed is touched: the file is edited in place with a round-trip YAML parser, so the operator's
comments, key order and untouched sections stay as they were. The file is replaced atomically (a crash mid-write
leaves the old file), keeps its permissions, and is never written when it changed on disk since it was read.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import ConfigError
from bot.files import replacing


def _changed(node: Any, old: Any, new: Any) -> Any:
    """`node` (the file's YAML for a value that was `old`) edited to say `new`, keeping what did not change."""
    if old == new:
        return node
    if isinstance(node, dict) and isinstance(old, dict) and isinstance(new, dict):
        for key in [k for k in node if k in old and k not in new]:
            del node[key]
        for key, value in new.items():
            if key in old and old[key] == value:
                continue
            node[key] = _changed(node[key], old.get(key), value) if key in node else value
        return node
    if isinstance(node, list) and isinstance(old, list) and isinstance(new, list) and len(node) == len(old):
        return _list(node, old, new)
    return new


def _list(node: Any, old: list[Any], new: list[Any]) -> Any:
    """A list edited in place: an item that is still there (moved or not) keeps its node and its comment; an
    edited item (the plugin of the same name, else the one at the same position) is edited in place; anything
    else is written new."""
    notes = getattr(getattr(node, "ca", None), "items", {})  # ruamel's end-of-line comments, by position

    def name(value: Any) -> Any:
        return value.get("name") if isinstance(value, dict) else None

    used: set[int] = set()
    items, comments = [], {}
    for i, value in enumerate(new):
        same = next((j for j, o in enumerate(old) if j not in used and o == value), None)
        if same is not None:
            item = node[same]
        else:
            peers = [j for j, o in enumerate(old) if j not in used and name(o) is not None and name(o) == name(value)]
            if not peers and len(old) == len(new) and i not in used and name(value) is None:
                peers = [i]
            if not peers:
                items.append(value)
                continue
            same = peers[0]
            item = _changed(node[same], old[same], value)
        used.add(same)
        if same in notes:
            comments[i] = notes[same]
        items.append(item)
    node[:] = items
    if hasattr(node, "ca"):
        node.ca.items.clear()
        node.ca.items.update(comments)
    return node


def save_sections(path: Path, before: Settings, after: Settings, sections: Iterable[str]) -> None:
    """Write `after`'s values of the top-level `sections` into the YAML file that `before` was loaded from.

    Raises:
        ConfigError: the file cannot be read, parsed or written; it is left as it was.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML()  # round trip: comments and order survive
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)  # the layout of bot/default.yaml
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    try:
        text = path.read_text(encoding="utf-8")
        doc = yaml.load(text)
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc.strerror or exc}.") from None
    except YAMLError:
        raise ConfigError(f"Config file {path} is not valid YAML; it was not changed.") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"Config file {path} does not hold a mapping of settings; it was not changed.")
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    for section in sections:
        doc[section] = _changed(doc[section], old[section], new[section]) if section in doc else new[section]
    out = io.StringIO()
    yaml.dump(doc, out)
    try:
        mode = path.stat().st_mode & 0o777
        with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(out.getvalue())
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, mode)
    except OSError as exc:
        raise ConfigError(f"Config file {path} cannot be written: {exc.strerror or exc}.") from None
