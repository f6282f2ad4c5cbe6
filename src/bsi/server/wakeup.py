"""Wake-up: the server's counterpart of Apple's push, as a long poll, across processes.

Devices hold ``GET /v1/ddm/wait?generation=N`` open; when anything that may
change what they should run changes (the catalogue, a supplement's state, a
declaration or an assignment, or an admin's explicit wake), the generation
moves on and every waiting device is answered and checks in. Polling with
jitter stays the fallback, so a device that misses a wake-up is late, never
wrong.

**One generation for every process.** The generation is a row of the
database (``bsi.store.wakeups``), not a per-process counter: behind a load
balancer a device may get generation N from one process and long-poll another
with it, and N must mean the same there. A change moves the row on (after the
change is committed), so a process that has seen generation N also sees every
change made before N.

**How each process hears of a move**, all in :meth:`Wakeups.follow` (one
background task per process):

* PostgreSQL: ``LISTEN``/``NOTIFY``. Every process keeps one listening
  connection and hears a move at once; a dropped connection is opened again
  with backoff (0.5 s doubling to 10 s), and the row is read first on each
  connection, so a move made while disconnected is not lost. While it is
  down, this process's waiters are late (their poll), never told wrong.
* SQLite (``bsi serve --workers N``, or several ``bsi serve`` on one file):
  each process reads the row every ``wakeup_poll_seconds`` (0.1 s). The
  database file is the one thing the processes are sure to share (a
  ``--database-url`` may put it outside the data directory, so a side file or
  socket would need a second rendezvous, and a socket broadcast would need a
  membership that survives a worker's crash); one read costs ~0.2 ms of CPU
  (measured on a loaded 2-core machine), so ten a second are ~0.2 % of a core
  per process, and WAL readers never wait for the status writer.

**Seen, then announced.** A process that hears of generation G first drops its
cached views (the catalogue, group declarations, rollouts: see
:meth:`bsi.server.service.BsiService.changed_elsewhere`) and only answers its
waiters a settle time later (0.1 s on PostgreSQL; one poll period more on SQLite),
so that every other process has heard of G too before any device woken by G
checks in (through the balancer it may reach any of them). A waiter's answer
is the announced generation. The settle is a time, not a proof: a process
whose listener is down, or whose loop stalls longer than the settle, may
serve a woken device from its cache (at most ``cache_seconds`` old); that
device finds the change at its next poll, late, never wrong.

**A generation this process has not announced** (``N`` above its own): the
row is read. ``N`` above the row is not from this database (an old
deployment, a restored backup): the device is answered at once with the row
and checks in. Otherwise the move is on its way here: the process takes it
in and the device waits for a generation above ``N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bsi.store.wakeups import GenerationStore

log = logging.getLogger("bsi.server.wakeup")

NOTIFY_SETTLE_SECONDS = 0.1
"""PostgreSQL: how long after hearing a move a process answers its waiters (every
listening process hears the notification at the same commit)."""
NOTIFY_HEARTBEAT_SECONDS = 1.0
"""PostgreSQL: how often the listening connection reads the row while it hears nothing
(a connection lost without a word is found by this read's timeout)."""
FIRST_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0


class Wakeups:
    """The long poll's generation in one server process, kept in step with the database's.

    ``every``: SQLite: how often the row is read (how soon a move made through
    another process is seen); PostgreSQL reads it every
    :data:`NOTIFY_HEARTBEAT_SECONDS` while quiet. ``forget``: drops this process's
    cached views; called on the event loop whenever a newer generation is seen.
    """

    def __init__(
        self,
        generations: GenerationStore,
        every: float,
        forget: Callable[[], None] = lambda: None,
    ) -> None:
        self.generation = 0
        """The announced generation: what waiters are told."""
        self._seen = 0
        self._store = generations
        self._every = NOTIFY_HEARTBEAT_SECONDS if generations.notifies else every
        self._settle = NOTIFY_SETTLE_SECONDS + (0 if generations.notifies else every)
        self._forget = forget
        self._changed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.following = False
        """Whether this process hears moves now (its listening connection or poll works)."""

    async def start(self) -> None:
        """Bind to the running loop and take the database's generation (no wake-up)."""
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):  # the database away: follow() catches up
            self.generation = self._seen = await asyncio.to_thread(self._store.current)

    def bump(self) -> None:
        """Something devices should run changed (and is committed): tell every process.
        For ``service.on_change``, so it never raises: when the database cannot be
        written, devices find the change at their poll. Blocking, so never on the loop."""
        try:
            self.advance()
        except Exception:
            log.exception(
                "could not move the wake-up generation on; devices find the "
                "change at their next poll"
            )

    def advance(self) -> int:
        """Move the shared generation on; returns the new one. Blocking (the database);
        raises what the database raises."""
        generation = self._store.advance()
        if self._loop is None:
            self._see(generation)
        else:
            self._loop.call_soon_threadsafe(self._see, generation)
        return generation

    async def follow(self) -> None:
        """Hear every move of the shared generation, for ever (a background task)."""
        backoff = FIRST_BACKOFF_SECONDS
        task = asyncio.current_task()
        while True:
            try:
                async with contextlib.aclosing(self._store.follow(self._every)) as moves:
                    async for generation in moves:
                        self.following, backoff = True, FIRST_BACKOFF_SECONDS
                        self._see(generation)
            except Exception as error:
                if task is not None and task.cancelling():
                    # The server stops: a driver that turned the cancellation into its own
                    # error (a connect cut short) must not keep this task alive.
                    raise asyncio.CancelledError from error
                level = logging.WARNING if self.following else logging.DEBUG
                log.log(level, "wake-ups from other processes lost (%s); retrying", error)
            self.following = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _see(self, generation: int) -> None:
        """On the loop: ``generation`` exists; drop cached views, announce it after the settle."""
        if generation <= self._seen:
            return
        self._seen = generation
        self._forget()
        if self._loop is None:
            self._announce(generation)
        else:
            self._loop.call_later(self._settle, self._announce, generation)

    def _announce(self, generation: int) -> None:
        if generation <= self.generation:
            return
        self.generation = generation
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, known: int, timeout: float) -> int:
        """The generation to give a device that knows ``known``: at once when this
        process announced a newer one (or ``known`` is not from this database), else
        once one above ``known`` is announced, or ``known`` after ``timeout`` seconds."""
        if known > self._seen:
            try:
                current: int | None = await asyncio.to_thread(self._store.current)
            except Exception:  # the database away: wait on what this process hears
                current = None
            if current is not None and known > current:
                return current
            if current is not None:
                self._see(current)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            # One deadline for the whole wait, and no task per waiter (asyncio.wait_for
            # made one for every waiting device, each woken at every announcement).
            async with asyncio.timeout_at(deadline):
                while self.generation <= known:
                    await self._changed.wait()
        return max(self.generation, known)
