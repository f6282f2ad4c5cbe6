"""The shared wake-up generation: one counter row, and PostgreSQL's NOTIFY when it moves.

:class:`GenerationStore` is what the server's wake-ups (``bsi.server.wakeup``)
need; :class:`SqlGenerations` implements it on the schema's
``wakeup_generation`` row, on both backends:

* PostgreSQL: :meth:`~SqlGenerations.advance` moves the row on and sends
  ``NOTIFY`` on :data:`WAKEUP_CHANNEL` with the new generation in the same
  transaction, so the notification goes out exactly when the change is
  visible (PostgreSQL delivers notifications at commit, and only then).
  :meth:`~SqlGenerations.follow` keeps one ``LISTEN`` connection and yields
  each notified generation at once.
* SQLite: there is no notification; :meth:`~SqlGenerations.follow` reads
  the row every ``every`` seconds (the processes share the database file
  and nothing else).

On both, ``follow`` first yields the current generation (what was missed
while disconnected) and re-reads it every ``every`` seconds while quiet; on
PostgreSQL that read is also the listening connection's health check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Protocol

import psycopg
from sqlalchemy import Engine, func, select, update

from bsi.store.database import CONNECT_TIMEOUT, DatabaseError, Sessions
from bsi.store.models import WAKEUP_ROW, WakeupGeneration

WAKEUP_CHANNEL = "bsi_wakeup"
"""The PostgreSQL notification channel; the payload is the new generation, in decimal."""

LISTENER_NAME = "bsi-wakeup-listener"
"""The listening connection's ``application_name`` (``pg_stat_activity`` shows it)."""

_CURRENT = select(WakeupGeneration.generation).where(WakeupGeneration.id == WAKEUP_ROW)
_DECIDED = select(WakeupGeneration.decided_generation).where(WakeupGeneration.id == WAKEUP_ROW)


class GenerationStore(Protocol):
    """The wake-up generation every server process shares."""

    @property
    def notifies(self) -> bool:
        """True when :meth:`follow` hears a move at once (PostgreSQL), False when it
        finds it by reading every ``every`` seconds (SQLite)."""
        ...

    def current(self) -> int:
        """The generation now. Blocking (the database)."""
        ...

    def advance(self) -> int:
        """Move the generation on and tell every process; returns the new one. Blocking."""
        ...

    def decided(self) -> int:
        """The newest generation a completed decision pass decided at (0 before any):
        the stored decisions have taken in every change up to it. Blocking."""
        ...

    def mark_decided(self, generation: int) -> None:
        """Record that a decision pass which read ``generation`` before its inputs has
        completed; an older generation than the one recorded changes nothing (passes of
        several processes may end in any order). Blocking."""
        ...

    def follow(self, every: float) -> AsyncGenerator[int, None]:
        """Yield the generation now, then each move (not necessarily each one: only
        the newest counts), re-reading every ``every`` seconds while quiet. Raises when
        the database cannot be reached or the connection is lost; the caller starts
        again (after a backoff) and gets the generation now first."""
        ...


class SqlGenerations(Sessions):
    """:class:`GenerationStore` on the ``wakeup_generation`` row (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._postgres = engine.dialect.name == "postgresql"

    @property
    def notifies(self) -> bool:
        return self._postgres

    def current(self) -> int:
        # Core, not a session: SQLite reads it ten times a second (half the CPU).
        with self.engine.connect() as connection:
            return int(connection.execute(_CURRENT).scalar_one())

    def advance(self) -> int:
        with self._writing() as session:
            session.execute(
                update(WakeupGeneration)
                .where(WakeupGeneration.id == WAKEUP_ROW)
                .values(generation=WakeupGeneration.generation + 1)
            )
            generation = int(session.execute(_CURRENT).scalar_one())
            if self._postgres:
                session.execute(select(func.pg_notify(WAKEUP_CHANNEL, str(generation))))
        return generation

    def decided(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(_DECIDED).scalar_one())

    def mark_decided(self, generation: int) -> None:
        with self._writing() as session:
            session.execute(
                update(WakeupGeneration)
                .where(
                    WakeupGeneration.id == WAKEUP_ROW,
                    WakeupGeneration.decided_generation < generation,
                )
                .values(decided_generation=generation)
            )

    async def follow(self, every: float) -> AsyncGenerator[int, None]:
        if not self._postgres:
            while True:
                yield await asyncio.to_thread(self.current)
                await asyncio.sleep(every)
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        current = str(_CURRENT.compile(self.engine, compile_kwargs={"literal_binds": True}))
        async with await psycopg.AsyncConnection.connect(
            conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=LISTENER_NAME,
        ) as connection:
            await connection.execute(f"LISTEN {WAKEUP_CHANNEL}")
            while True:
                # A connection cut without a word (no FIN) would hang a read for
                # minutes: the read has the connect timeout too.
                async with asyncio.timeout(CONNECT_TIMEOUT):  # (wait_for may eat a cancel)
                    cursor = await connection.execute(current)
                    row = await cursor.fetchone()
                if row is None:
                    raise DatabaseError(
                        "the wake-up generation row is missing", hint="bsi db upgrade"
                    )
                yield int(row[0])
                # Closed on leaving: a generator left open keeps the connection's lock.
                async with contextlib.aclosing(connection.notifies(timeout=every)) as notices:
                    async for notice in notices:
                        if not notice.payload.isdecimal():
                            break  # not bsi's: read the row instead
                        yield int(notice.payload)
