"""The server's watch of its hosted TUF repository: a changed repository is re-read
once; a failed re-read is retried with backoff, never forgotten and never a log flood;
a refusal is not retried."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from bsi.errors import Conflict
from bsi.server.tuf_hosting import watch_repository


def watch(repo: Path, outcomes: list[BaseException | None], seconds: float) -> int:
    """Run the watch for ``seconds`` after one change; the number of re-reads it made.

    ``outcomes`` is what each re-read does in turn (raise it, or succeed on
    ``None``); the last one repeats.
    """
    calls = 0

    def on_publish() -> None:
        nonlocal calls
        outcome = outcomes[min(calls, len(outcomes) - 1)]
        calls += 1
        if outcome is not None:
            raise outcome

    async def run() -> None:
        task = asyncio.create_task(watch_repository(repo, on_publish, 0.01))
        await asyncio.sleep(0.05)
        (repo / "metadata" / "2.targets.json").write_text("{}")
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return calls


def repository(tmp_path: Path) -> Path:
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "1.targets.json").write_text("{}")
    return tmp_path


def test_a_change_is_read_once(tmp_path: Path) -> None:
    assert watch(repository(tmp_path), [None], 0.5) == 1


def test_a_failed_reread_is_retried_until_it_succeeds_then_left(tmp_path: Path) -> None:
    broken = RuntimeError("half-published")
    assert watch(repository(tmp_path), [broken, broken, None], 1.0) == 3


def test_a_repository_that_stays_broken_is_retried_with_backoff(tmp_path: Path) -> None:
    calls = watch(repository(tmp_path), [RuntimeError("unreadable")], 1.0)
    assert 3 <= calls <= 10  # every 10 ms without backoff: about 100


def test_a_refused_change_is_not_retried(tmp_path: Path) -> None:
    assert watch(repository(tmp_path), [Conflict("signed again with other bytes")], 0.5) == 1


def test_a_publish_read_half_done_is_read_again_once_its_timestamp_is_in_place(
    tmp_path: Path,
) -> None:
    """A publish writes the new targets first and the timestamp last; a re-read between
    the two finds the old catalogue, so the watch must look again after the timestamp
    (without it, the new supplement never reached the server: CI, 2026-12-01)."""
    repo = repository(tmp_path)
    (repo / "metadata" / "timestamp.json").write_text('{"version": 1}')
    reads = 0

    def on_publish() -> None:
        nonlocal reads
        reads += 1

    async def run() -> None:
        task = asyncio.create_task(watch_repository(repo, on_publish, 0.01))
        await asyncio.sleep(0.05)
        (repo / "metadata" / "2.targets.json").write_text("{}")  # the publish, half done
        await asyncio.sleep(0.2)
        assert reads == 1
        written = repo / "metadata" / "timestamp.json.tmp"
        written.write_text('{"version": 2}')
        written.replace(repo / "metadata" / "timestamp.json")  # as a publish replaces it
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert reads == 2
