"""Passage blocks: the keys and values of each passage text computed once and spliced into later prompts."""

from __future__ import annotations

from collections import OrderedDict

from plugins.responders.engine import KVBlock, KVCache, LlamaEngine


class PassageBlocks:
    """Computed passage blocks, least recently used first out once they exceed `budget` bytes.

    Every block is computed after the same `context` (the system prompt and the opening of the question message,
    as for a first passage), never after whatever came before it in the prompt that first brought it, so a
    prompt's answer does not depend on which prompts came before it. Only the scheduler thread uses a store.
    """

    def __init__(self, engine: LlamaEngine, context: KVCache, budget: int) -> None:
        self.engine = engine
        self.context = context
        self.budget = budget
        self.size = 0
        self.hits = 0  # blocks taken from the store / computed (for tests and benchmarks)
        self.misses = 0
        self._blocks: OrderedDict[tuple[int, ...], KVBlock] = OrderedDict()

    @property
    def count(self) -> int:
        """How many blocks are stored."""
        return len(self._blocks)

    def clear(self) -> None:
        """Let every stored block go."""
        self._blocks.clear()
        self.size = 0

    def get(self, ids: list[int]) -> KVBlock:
        """The block of these tokens: stored, or computed now (and kept while it fits the budget)."""
        key = tuple(ids)
        block = self._blocks.get(key)
        if block is not None:
            self._blocks.move_to_end(key)
            self.hits += 1
            return block
        self.misses += 1
        block = self.engine.block(ids, self.context)
        self._blocks[key] = block
        self.size += block.nbytes
        while self.size > self.budget and self._blocks:
            _, old = self._blocks.popitem(last=False)
            self.size -= old.nbytes
        return block
