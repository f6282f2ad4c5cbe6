"""Group commit for status reports: one writer thread reads, merges and writes a batch.

A report is parsed where it arrives (the event loop) and queued here with its
merge; its sender waits for its future, so nothing acknowledged is ever lost.
The writer thread takes what is queued (up to ``batch_max`` reports), reads
the stored status of all their devices in one statement
(:meth:`~bsi.store.store.Store.stored_statuses`), merges each report (pure:
the merge, its decision and its events), and writes those that change
something in one transaction (:meth:`~bsi.store.store.Store.write_device_states`),
each a compare-and-set on the device's status version: another process or a
decision pass may write between the read and the write, and then that report
is merged again in the next batch (at most :data:`STATUS_WRITE_ATTEMPTS` times,
then :class:`~bsi.errors.Conflict`).

Every report has its own outcome: a report its merge refuses (an identity
contradiction), the database refuses, or whose device is unknown or revoked
fails alone; an unchanged one writes nothing. A device's reports are merged in
the order they arrived: a second report of a device already in the batch waits
for the next batch, so it merges onto what the first one stored. When the
database is away the whole batch fails with its error, and a failure of the
thread itself answers every report it holds (the next report starts a new
thread): no waiter is left without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from bsi.domain.eligibility import Decision
from bsi.domain.status import DeviceState
from bsi.errors import BsiError, Conflict
from bsi.store.events import NewEvent
from bsi.store.protocols import DeviceStore
from bsi.store.store import KnownState, StatusWrite, StoredStatus

log = logging.getLogger("bsi.server")
T = TypeVar("T")
STATUS_WRITE_ATTEMPTS = 5
"""How often a report is merged again when other writes of its device land first."""
KNOWN_STATES = 4096
"""Devices whose last state the writer keeps, so that their next report's read reuses it
(:meth:`~bsi.store.store.Store.stored_statuses`); the least recently written go first. A
device reports again within seconds while it installs, and each state is a few kB."""

Merged = tuple[DeviceState, Decision | None, tuple[NewEvent, ...]]
"""A report merged onto a stored status: the new state, its decision, the events of
its transitions."""


@dataclass(frozen=True, slots=True)
class StatusStored:
    """What became of a report: the device's state after it, and whether it was written
    (False: it changed nothing, so nothing was written) with which events."""

    state: DeviceState
    written: bool
    events: tuple[NewEvent, ...] = ()


@dataclass(slots=True)
class StatusJob:
    """One device's report waiting for the writer.

    ``merge`` folds the report onto the device's stored status (run in the writer
    thread, outside any transaction; a :class:`~bsi.errors.BsiError` it raises refuses
    this report alone). ``finish`` runs in the writer thread once the report's outcome
    is known (after its batch committed), before its sender is answered; an error it
    raises is the report's answer.
    """

    device_id: str
    merge: Callable[[StoredStatus], Merged]
    finish: Callable[[StatusStored | BsiError], None]
    done: Future[DeviceState]
    attempts: int = 0


class StatusWriter:
    def __init__(
        self,
        store: DeviceStore,
        clock: Callable[[], datetime],
        *,
        batch_max: int = 200,
        written: Callable[[list[NewEvent]], object] = lambda events: None,
    ) -> None:
        """``written``: called once per batch that stored something, with the events of
        every report it stored, before their senders are answered (the server halts the
        rollouts a failure concerns: one look at the running rollouts per batch, not per
        report); an error it raises is logged, the reports stay stored and answered."""
        self._store = store
        self._clock = clock
        self._batch_max = batch_max
        self._written = written
        self._queue: queue.SimpleQueue[StatusJob] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._known: OrderedDict[str, KnownState] = OrderedDict()
        """The writer thread's own: each device's last state read or written, at its version."""

    def submit(
        self,
        device_id: str,
        merge: Callable[[StoredStatus], Merged],
        finish: Callable[[StatusStored | BsiError], None],
    ) -> Future[DeviceState]:
        """Queue one report; its future holds the device's state once the report is stored
        (or found unchanged), or the error that refused it. Cancelling the future before
        the writer took the report withdraws it (nothing is written)."""
        done: Future[DeviceState] = Future()
        self._queue.put(StatusJob(device_id, merge, finish, done))
        self._ensure_running()
        return done

    def _ensure_running(self, *, replace: threading.Thread | None = None) -> None:
        """Start the writer thread unless one runs (``replace``: one that is ending)."""
        thread = self._thread
        if thread is not None and thread is not replace and thread.is_alive():
            return
        with self._lock:
            thread = self._thread
            if thread is None or thread is replace or not thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="bsi-status-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        waiting: list[StatusJob] = []
        """Reports taken from the queue but not yet written: merged again, or a device's
        later report; they go first, in order, into the next batch."""
        while True:
            if not waiting:
                waiting = self._taken([self._queue.get()])
            batch, waiting = self._batch(waiting)
            try:
                waiting = self._write(batch) + waiting
            except Exception as error:  # the database is away: every report of the batch
                log.exception("could not store %d status reports", len(batch))
                _fail(batch, error)
            except BaseException as error:  # this thread ends: answer every report it
                _fail([*batch, *waiting], error)  # holds; a new one serves the queue
                self._ensure_running(replace=threading.current_thread())
                raise

    def _taken(self, jobs: Iterable[StatusJob]) -> list[StatusJob]:
        """``jobs`` whose senders still wait (a cancelled one was withdrawn)."""
        return [job for job in jobs if job.done.set_running_or_notify_cancel()]

    def _batch(self, waiting: list[StatusJob]) -> tuple[list[StatusJob], list[StatusJob]]:
        """The next batch (one report per device, the oldest first) and what waits on."""
        batch: list[StatusJob] = []
        later: list[StatusJob] = []
        devices: set[str] = set()
        candidates = list(waiting)
        while len(batch) < self._batch_max:
            if not candidates:
                try:
                    candidates = self._taken([self._queue.get_nowait()])
                except queue.Empty:
                    break
                continue
            job = candidates.pop(0)
            if job.device_id in devices:
                later.append(job)
            else:
                devices.add(job.device_id)
                batch.append(job)
        return batch, later + candidates

    def _write(self, batch: list[StatusJob]) -> list[StatusJob]:
        """Read, merge and write ``batch``; returns the reports to merge again."""
        stored = self._store.stored_statuses((job.device_id for job in batch), self._known)
        writes: list[StatusWrite] = []
        writing: list[StatusJob] = []
        for job in batch:
            found = stored[job.device_id]
            if isinstance(found, BsiError):
                _settle(job, found)
                continue
            if found.state is not None:
                self._keep(job.device_id, (found.version, found.state))
            try:
                state, decision, events = job.merge(found)
            except Exception as error:  # refuses this report alone
                _settle(job, error)
                continue
            if found.holds(state, decision):
                _settle(job, StatusStored(state, written=False))
                continue
            writes.append(
                StatusWrite(
                    job.device_id,
                    found.version,
                    found.state,
                    state,
                    decision,
                    events,
                    found.indexed,
                )
            )
            writing.append(job)
        if not writes:
            return []
        again: list[StatusJob] = []
        results = self._store.write_device_states(writes, self._clock())
        landed = [w for w, r in zip(writes, results, strict=True) if isinstance(r, DeviceState)]
        if landed:
            try:
                self._written([event for write in landed for event in write.events])
            except Exception:
                log.exception("after storing %d status reports", len(landed))
        for job, write, result in zip(writing, writes, results, strict=True):
            if isinstance(result, DeviceState):
                self._keep(job.device_id, (write.version + 1, result))  # its compare-and-set
                _settle(job, StatusStored(result, written=True, events=write.events))
            elif isinstance(result, BsiError):
                _settle(job, result)
            else:  # another writer stored this device's status since the read
                job.attempts += 1
                if job.attempts < STATUS_WRITE_ATTEMPTS:
                    again.append(job)
                else:
                    _settle(job, _kept_changing(job.device_id))
        return again

    def _keep(self, device_id: str, known: KnownState) -> None:
        self._known[device_id] = known
        self._known.move_to_end(device_id)
        if len(self._known) > KNOWN_STATES:
            self._known.popitem(last=False)


def _settle(job: StatusJob, outcome: StatusStored | Exception) -> None:
    """Run the report's ``finish`` and answer its sender."""
    try:
        if isinstance(outcome, StatusStored | BsiError):
            job.finish(outcome)
    except Exception as error:
        outcome = error
    if isinstance(outcome, StatusStored):
        job.done.set_result(outcome.state)
    else:
        job.done.set_exception(outcome)


def _fail(jobs: list[StatusJob], error: BaseException) -> None:
    for job in jobs:
        if not job.done.done():
            job.done.set_exception(error)


def _kept_changing(device_id: str) -> Conflict:
    """A report merged :data:`STATUS_WRITE_ATTEMPTS` times, each time overtaken by another
    write of the device's status (its sender should send it again)."""
    return Conflict(
        f"device {device_id}'s status kept changing while this report was merged",
        hint="send the report again",
    )


async def outcome(done: Future[T]) -> T:
    """Wait on the event loop for ``done``, a future the writer thread settles; cancelling
    the wait cancels ``done`` (a report the writer has not taken yet is withdrawn).

    What :func:`asyncio.wrap_future` does, but the writer settles a whole batch at once,
    and ``wrap_future`` wakes the loop once per future (a self-pipe write, a callback to
    run, a future to copy: about 8 % of a status report's CPU, issue 18). Here the
    futures settled in one burst reach the loop in one call (:class:`_Deliveries`).
    """
    loop = asyncio.get_running_loop()
    deliveries = _DELIVERIES.get(loop)
    if deliveries is None:
        deliveries = _DELIVERIES[loop] = _Deliveries(loop)
    waiter: asyncio.Future[T] = loop.create_future()
    waiter.add_done_callback(lambda w: done.cancel() if w.cancelled() else None)
    done.add_done_callback(lambda settled: deliveries.arrived(settled, waiter))
    return await waiter


class _Deliveries:
    """Settled thread futures on their way to one event loop's waiters: the first of a
    burst schedules the hand-over, the rest join it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._ready: list[tuple[Future[object], asyncio.Future[object]]] = []

    def arrived(self, settled: Future[T], waiter: asyncio.Future[T]) -> None:
        """Any thread: ``settled`` is done; its waiter learns it on the loop."""
        with self._lock:
            self._ready.append((settled, waiter))  # type: ignore[arg-type]
            if len(self._ready) > 1:  # a hand-over is already scheduled
                return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for settled, waiter in ready:
            if waiter.done():  # its wait was cancelled
                continue
            if settled.cancelled():
                waiter.cancel()
            elif (error := settled.exception()) is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(settled.result())


_DELIVERIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deliveries] = (
    weakref.WeakKeyDictionary()
)
