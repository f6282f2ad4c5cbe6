"""Group commit for status reports: one writer thread, one transaction per batch.

Every report still waits until its own write is committed before the device
gets its answer, so nothing acknowledged is ever lost; but reports arriving
together share one transaction (and, on SQLite, one turn at the write lock),
instead of queueing for the lock one by one.
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
from bsi.store.store import Merge, Store

log = logging.getLogger("bsi.server")
_Item = tuple[str, Merge, "Future[DeviceState]"]


class StatusWriter:
    def __init__(
        self, store: Store, clock: Callable[[], datetime], *, batch_max: int = 200
    ) -> None:
        self._store = store
        self._clock = clock
        self._batch_max = batch_max
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, device_id: str, merge: Merge) -> Future[DeviceState]:
        self._ensure_running()
        done: Future[DeviceState] = Future()
        self._queue.put((device_id, merge, done))
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
            results = self._store.save_device_states(
                [(device_id, merge) for device_id, merge, _ in batch], self._clock()
            )
        except Exception as error:  # the whole transaction failed: tell every waiter
            log.exception("could not store %d status reports", len(batch))
            for _, _, done in batch:
                done.set_exception(error)
            return
        for (_, _, done), result in zip(batch, results, strict=True):
            if isinstance(result, BsiError):
                done.set_exception(result)
            else:
                done.set_result(result)
