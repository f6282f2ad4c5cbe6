"""The wake-up generation as two server processes share it, in one test process.

Two :class:`Wakeups` on one database stand for two processes (each with its
own store, as each process has its own engine); the end-to-end test with
real processes behind HAProxy is ``test_wakeups_across_processes``. These
check the rules that keep a device from missing a change: a generation from
the other process is judged against the database, one ahead of it is not
this deployment's, and a database that does not answer makes waiters late,
never wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from bsi.server.wakeup import Wakeups
from bsi.store.database import open_engine, upgrade
from bsi.store.wakeups import WAKEUP_CHANNEL, SqlGenerations


def process(url: str, forgotten: list[str], name: str) -> Wakeups:
    """One server process's wake-ups; ``forgotten`` records each time it drops its caches.
    Nothing follows the row here (no ``follow`` task): a move made through the other
    reaches it only through a device's generation. It answers 0.3 s after it hears."""
    return Wakeups(SqlGenerations(open_engine(url)), 0.2, lambda: forgotten.append(name))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_database")()
        return url
    url = f"sqlite:///{tmp_path / 'bsi.db'}"
    upgrade(open_engine(url))
    return url


def test_a_generation_from_the_other_process_is_judged_against_the_database(
    database_url: str,
) -> None:
    forgotten: list[str] = []
    a, b = process(database_url, forgotten, "a"), process(database_url, forgotten, "b")

    async def scenario() -> None:
        await a.start()
        await b.start()
        assert a.generation == b.generation == 0
        moved = await asyncio.to_thread(a.advance)  # a change through a
        assert moved == 1
        # b has not heard: a device told 1 by a is held,
        # not answered with b's 0 (which would make it check in again for nothing and
        # then wait on a generation the change is already past)...
        started = time.monotonic()
        assert await b.wait(moved, 0.3) == moved
        assert time.monotonic() - started >= 0.25
        # ...and b took the move in: its cached views were dropped before any device
        # woken by 1 could check in there.
        assert "b" in forgotten
        # a device that knew only 0 is answered by b now (after its settle time).
        assert await asyncio.wait_for(b.wait(0, 30), 5) == moved
        # a generation ahead of the database is not from it: answered at once with the row.
        assert await asyncio.wait_for(b.wait(moved + 1000, 30), 5) == moved

    asyncio.run(scenario())


def test_a_waiter_is_answered_once_a_newer_generation_is_announced(database_url: str) -> None:
    forgotten: list[str] = []
    a = process(database_url, forgotten, "a")

    async def scenario() -> None:
        await a.start()
        waiting = asyncio.create_task(a.wait(0, 30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        moved = await asyncio.to_thread(a.advance)
        assert await asyncio.wait_for(waiting, 5) == moved
        assert forgotten == ["a"]

    asyncio.run(scenario())


def test_a_database_that_does_not_answer_makes_waiters_late_never_wrong(
    tmp_path: Path,
) -> None:
    forgotten: list[str] = []
    away = process(f"sqlite:///{tmp_path / 'missing' / 'bsi.db'}", forgotten, "a")

    async def scenario() -> None:
        await away.start()  # the database away at start: generation 0 until heard
        # A device's generation cannot be checked: it is held for its timeout and told
        # its own generation back (no check-in it does not need, none it misses).
        assert await away.wait(5, 0.2) == 5
        # A change whose wake-up cannot be stored is logged, not raised (the change
        # itself is done): devices find it at their poll.
        await asyncio.to_thread(away.bump)
        assert away.generation == 0
        assert forgotten == []

    asyncio.run(scenario())


def test_a_notification_that_is_not_bsis_makes_the_listener_read_the_row(
    postgres_database: Callable[[], str],
) -> None:
    url = postgres_database()
    generations = SqlGenerations(open_engine(url))
    dsn = url.replace("postgresql+psycopg://", "postgresql://")

    async def scenario() -> None:
        async with contextlib.aclosing(generations.follow(600)) as moves:
            assert await anext(moves) == 0
            with psycopg.connect(dsn, autocommit=True) as other:
                other.execute("SELECT pg_notify(%s, 'not a number')", (WAKEUP_CHANNEL,))
            assert await asyncio.wait_for(anext(moves), 10) == 0  # the row, read again
            moved = await asyncio.to_thread(generations.advance)
            assert await asyncio.wait_for(anext(moves), 10) == moved

    asyncio.run(scenario())


def test_the_decided_generation_only_moves_forward(database_url: str) -> None:
    """Passes of several processes may end in any order: the newest one recorded stays."""
    generations = SqlGenerations(open_engine(database_url))
    assert generations.decided() == 0
    generations.advance()
    generations.advance()
    assert (generations.current(), generations.decided()) == (2, 0)
    generations.mark_decided(2)
    generations.mark_decided(1)  # an older pass ending later
    assert generations.decided() == 2
    assert generations.current() == 2  # the wake-up generation is not touched
