"""The ASGI entry for ``bsi serve`` and for any ASGI server run by hand.

Settings come from the environment (``BSI_*``, one variable per setting of
:class:`~bsi.server.settings.ServerSettings`; ``bsi serve --help`` lists
them), so that every worker process builds the same app:

    BSI_DATA_DIR=/var/lib/bsi uvicorn --factory bsi.server.asgi:app_from_environment
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time

from fastapi import FastAPI

from bsi.server.app import create_app, prepare
from bsi.server.settings import ServerSettings, load


def settings_from_environment() -> ServerSettings:
    """The ``BSI_*`` variables read into settings; :class:`~bsi.errors.InvalidInput`
    names each bad one."""
    return load(ServerSettings)


SUPERVISOR_PID = "BSI_SUPERVISOR_PID"
"""Set by ``bsi serve --workers N``: the process whose death ends every worker."""


def exit_with_supervisor(supervisor: int, every_seconds: float = 0.5) -> threading.Thread:
    """Stop this worker when its supervisor is gone (SIGKILLed, say).

    Without it the workers keep serving on the shared socket and a restart
    fails with "address already in use". A reparented worker gets SIGTERM
    (uvicorn's graceful stop), and exits hard if that has not ended it in 10 s.
    """

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(every_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
        os._exit(3)

    thread = threading.Thread(target=watch, name="bsi-supervisor-watch", daemon=True)
    thread.start()
    return thread


def app_from_environment() -> FastAPI:
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor:
        exit_with_supervisor(int(supervisor))
    # The event loop answers check-ins while the status writer and the thread
    # pool hold the GIL; a shorter switch interval keeps its waits short.
    sys.setswitchinterval(0.0005)
    settings = settings_from_environment()
    app = create_app(prepare(settings), settings)
    keep_collections_short()
    return app


YOUNG_COLLECTION_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation (CPython's default is
700): fewer of them promote fewer short-lived objects (a decision pass's batch of
device states) to older generations, whose collections take longer."""


def keep_collections_short() -> None:
    """Garbage collections hold the interpreter, so every request waits for them. What
    the process has loaded by now (modules, classes, functions, the app: most of its
    heap) lives as long as it does: it is frozen out of every later collection.

    Measured at 100,000 devices (``benchmarks/checkin.py --publish``): during a
    decision pass full collections came every 6 s and took 150-200 ms each, and an
    unchanged check-in's p99 went from 6 to 190 ms; frozen, 15-45 ms; with
    :data:`YOUNG_COLLECTION_THRESHOLD` too, none came, and the p99 went to 12 ms.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)
