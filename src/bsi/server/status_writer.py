"""Group commit for status reports: one writer thread, one transaction per batch.

Every report still waits until its own write is committed before the device
gets its answer, so nothing acknowledged is ever lost; but reports arriving
together share one transaction (and, on SQLite, one turn at the write lock),
instead of queueing for the lock one by one.

Only finished work reaches this thread: a report is parsed and merged by the
request's own thread, outside any transaction, and the writer stores the
result with a compare-and-set (see :meth:`bsi.store.store.Store.write_device_states`).
Each report has its own savepoint and its own outcome, so a huge or broken
report costs its sender time and nobody else's.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

from bsi.domain.status import DeviceState
from bsi.errors import BsiError
from bsi.store.protocols import DeviceStore
from bsi.store.store import StatusWrite

log = logging.getLogger("bsi.server")
Outcome = DeviceState | BsiError | None
"""Stored state, the error that refused this report, or None: merge again."""
_Item = tuple[StatusWrite, "Future[Outcome]"]


class StatusWriter:
    def __init__(
        self, store: DeviceStore, clock: Callable[[], datetime], *, batch_max: int = 200
    ) -> None:
        self._store = store
        self._clock = clock
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, write: StatusWrite) -> Future[Outcome]:
        self._ensure_running()
        done: Future[Outcome] = Future()
        self._queue.put((write, done))
        return done

    def _ensure_running(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="bsi-status-writer", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self._batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write(batch)

    def _write(self, batch: list[_Item]) -> None:
        try:
            results = self._store.write_device_states([write for write, _ in batch], self._clock())
        except Exception as error:  # the whole transaction failed: tell every waiter
            log.exception("could not store %d status reports", len(batch))
            for _, done in batch:
                done.set_exception(error)
            return
        for (_, done), result in zip(batch, results, strict=True):
            done.set_result(result)
