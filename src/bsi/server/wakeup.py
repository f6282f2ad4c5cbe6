"""Wake-up: the server's counterpart of Apple's push, as a long poll.

Devices hold ``GET /v1/ddm/wait?generation=N`` open; when anything that may
change what they should run changes (the catalogue, a supplement's state, a
declaration or an assignment, or an admin's explicit wake), the generation
moves on and every waiting device is answered at once and checks in. Polling
with jitter stays the fallback, so a device that misses a wake-up is late,
never wrong.

The generation is per server process: behind a load balancer, a change made
through one process wakes the devices waiting on that process; the others
find it at their next poll or long-poll timeout.
"""

from __future__ import annotations

import asyncio
import contextlib


class Wakeups:
    def __init__(self) -> None:
        self.generation = 0
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def bump(self) -> None:
        """Safe from any thread: the service calls it from the thread pool."""
        if self._loop is None:
            self._advance()
        else:
            self._loop.call_soon_threadsafe(self._advance)

    def _advance(self) -> None:
        self.generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, known: int, timeout: float) -> int:
        """The generation once it differs from ``known``, or after ``timeout`` seconds."""
        if known != self.generation:
            return self.generation
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return self.generation
