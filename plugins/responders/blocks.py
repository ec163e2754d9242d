"""Passage blocks: the keys and values of each passage text computed once and spliced into later prompts."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from bot.files import replacing
from plugins.responders.engine import KVBlock, KVCache, LlamaEngine

log = logging.getLogger(__name__)


class BlockFolder:
    """Blocks kept on disk, one `.npz` file per passage (its token ids and float16 keys and values), so they
    outlive a restart and are shared by every process serving with the same model, adapter and system prompt.

    The folder's name says what the blocks were computed with (see `HFResponder._block_folder`); files are written
    atomically, so a killed process or two writers at once never leave a half block. The folder keeps within
    `budget` bytes: a block computed for a prompt makes room by deleting the least recently used files (a read
    marks a file used), so blocks of passages no longer served (a changed or deleted chunk) go first. Preparing
    ahead only fills free room, so it never pushes out blocks in use.
    """

    def __init__(self, path: Path, budget: int) -> None:
        self.path = path
        self.budget = budget
        self.size = sum(f.stat().st_size for f in path.glob("*.npz")) if path.is_dir() else 0
        self._full_logged = False
        self.full = False  # set once a block prepared ahead found no free room (preparing to disk stops)

    @staticmethod
    def _name(ids: tuple[int, ...]) -> str:
        return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()[:32] + ".npz"

    def has(self, ids: tuple[int, ...]) -> bool:
        """Whether a block of these tokens is stored."""
        return (self.path / self._name(ids)).is_file()

    def load(self, ids: tuple[int, ...], origin: int) -> KVBlock | None:
        """The stored block of these tokens, or None (missing, unreadable or not these tokens)."""
        file = self.path / self._name(ids)
        if not file.is_file():
            return None
        try:
            with np.load(file) as data:
                if tuple(int(t) for t in data["tokens"]) != ids or int(data["origin"]) != origin:
                    return None
                kv = torch.from_numpy(np.ascontiguousarray(data["kv"]))  # [2, layers, heads, length, dim]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("passage block %s is unreadable (%s); computing it again", file.name, exc)
            return None
        with contextlib.suppress(OSError):
            os.utime(file)  # used now: the last to go when room is made
        return KVBlock(ids, origin, list(kv[0].unbind(0)), list(kv[1].unbind(0)))

    def _make_room(self, needed: int) -> bool:
        """Delete the least recently used files until `needed` more bytes fit; whether they do."""
        if self.size + needed <= self.budget:
            return True
        files = []
        for f in self.path.glob("*.npz"):
            with contextlib.suppress(OSError):
                st = f.stat()
                files.append((st.st_mtime_ns, st.st_size, f))
        self.size = sum(size for _, size, _ in files)  # other processes may have written or deleted some
        for _, size, f in sorted(files, key=lambda x: (x[0], x[2].name)):
            if self.size + needed <= self.budget:
                break
            with contextlib.suppress(OSError):
                f.unlink()
                self.size -= size
        return self.size + needed <= self.budget

    def save(self, block: KVBlock, evict: bool = True) -> bool:
        """Store a block, making room first with `evict`, else only if it fits; whether it was stored (a failed
        write is logged, never raised: it only costs speed)."""
        if not (self._make_room(block.nbytes) if evict else self.size + block.nbytes <= self.budget):
            self.full = self.full or not evict
            if not self._full_logged:
                log.warning("passage block folder %s is full (%d MB)", self.path, self.budget >> 20)
                self._full_logged = True
            return False
        kv = torch.stack([torch.stack(block.keys), torch.stack(block.values)]).numpy()
        file = self.path / self._name(block.tokens)
        try:
            with replacing(file) as tmp, open(tmp, "wb") as out:
                np.savez(out, tokens=np.asarray(block.tokens, dtype=np.int64), origin=block.origin, kv=kv)
            self.size += file.stat().st_size
            return True
        except OSError as exc:
            log.warning("passage block could not be stored in %s: %s", self.path, exc)
            return False


def _usage(folder: Path) -> tuple[int, int]:
    """A block folder's last use (the newest file time, reads included: they touch the file) and its size."""
    newest, size = 0, 0
    with contextlib.suppress(OSError):
        newest = folder.stat().st_mtime_ns
        for f in folder.iterdir():
            with contextlib.suppress(OSError):
                st = f.stat()
                newest, size = max(newest, st.st_mtime_ns), size + st.st_size
    return newest, size


def prune_folders(current: Path, budget: int) -> list[Path]:
    """Keep the block folders beside `current` (other models, adapters, weight or KV formats, system prompts)
    within `budget` bytes together with it: the least recently used ones are deleted whole until they fit.
    `current` itself is never touched (its own files are kept within the budget by `BlockFolder`). Returns the
    folders deleted. A folder another process deletes meanwhile is skipped; one in use elsewhere is recomputed
    there as its prompts need it."""
    root = current.parent
    if not root.is_dir():
        return []
    others = []
    for folder in root.iterdir():
        if folder.is_dir() and folder.name != current.name:
            used, size = _usage(folder)
            others.append((used, folder.name, size, folder))
    total = _usage(current)[1] + sum(size for *_, size, _ in others)
    removed = []
    for _, _, size, folder in sorted(others):
        if total <= budget:
            break
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            total -= size
            removed.append(folder)
            log.info("deleted passage block folder %s (%d MB, least recently used)", folder.name, size >> 20)
    return removed


class PassageBlocks:
    """Computed passage blocks, least recently used first out once they exceed `budget` bytes, and (with a
    `folder`) also kept on disk.

    Every block is computed after the same `context` (the system prompt and the opening of the question message,
    as for a first passage), never after whatever came before it in the prompt that first brought it, so a
    prompt's answer does not depend on which prompts came before it, nor on whether its blocks came from memory,
    disk or were computed now. Only the scheduler thread uses a store.
    """

    def __init__(self, engine: LlamaEngine, context: KVCache, budget: int, folder: BlockFolder | None = None) -> None:
        self.engine = engine
        self.context = context
        self.budget = budget
        self.folder = folder
        self.size = 0
        self.hits = 0  # blocks taken from memory / from disk / computed (for tests and benchmarks)
        self.loads = 0
        self.misses = 0
        self._blocks: OrderedDict[tuple[int, ...], KVBlock] = OrderedDict()

    @property
    def count(self) -> int:
        """How many blocks are held in memory."""
        return len(self._blocks)

    def clear(self) -> None:
        """Let every block held in memory go (those on disk stay)."""
        self._blocks.clear()
        self.size = 0

    def get(self, ids: list[int]) -> KVBlock:
        """The block of these tokens: from memory, from disk, or computed now (and stored)."""
        key = tuple(ids)
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
            self.hits += 1
            return block
        block = self.folder.load(key, self.context.length) if self.folder is not None else None
        if block is not None:
            self.loads += 1
        else:
            self.misses += 1
            block = self.engine.block(ids, self.context)
            if self.folder is not None:
                self.folder.save(block)
        self._blocks[key] = block
        self.size += block.nbytes
        while self.size > self.budget and self._blocks:
            _, old = self._blocks.popitem(last=False)
            self.size -= old.nbytes
        return block

    def prepare(self, ids: list[int]) -> bool:
        """Compute and store the block of these tokens ahead of the prompts that will quote it, without pushing
        blocks in use out of memory. Returns whether a block was stored (False: already stored, or no free room)."""
        key = tuple(ids)
        if key in self._blocks or (self.folder is not None and self.folder.has(key)):
            return False
        to_disk = self.folder is not None and not self.folder.full
        if not to_disk and self.size >= self.budget:
            return False  # nowhere left: keep what recent prompts used
        block = self.engine.block(ids, self.context)
        if to_disk and self.folder is not None:
            return self.folder.save(block, evict=False)
        self._blocks[key] = block
        self._blocks.move_to_end(key, last=False)  # first out, before anything a prompt used
        self.size += block.nbytes
        return True
