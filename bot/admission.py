"""Admission: how many turns may be past the input guards (retrieving, generating, checking output) at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Admission:
    """At most `limit` turns answer at once; the others wait, in arrival order, without using the CPU.

    The gate stands after the input guards, so a turn they block never queues behind answers being
    generated: under a load that saturates the machine, the cheap refusals stay fast and the waiting falls
    on turns that would have waited for the CPU anyway. `limit` 0 lets every turn through.

    One gate per event loop (a web app has one); it is created lazily on the loop that first uses it.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (no gate) or a positive number of turns")
        self.limit = limit
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self.waiting = 0  # turns queued at the gate now
        self.active = 0  # turns past it now

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._loop, self._semaphore = loop, asyncio.Semaphore(self.limit)
        return self._semaphore

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        """Hold one place for the body of the `async with` (released also on cancellation)."""
        gate = self._gate() if self.limit else None
        if gate is not None:
            self.waiting += 1
            try:
                await gate.acquire()
            finally:
                self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            if gate is not None:
                gate.release()
