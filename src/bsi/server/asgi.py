"""The ASGI entry for ``bsi serve`` and for any ASGI server run by hand.

Settings come from the environment (``BSI_*``, one variable per setting of
:class:`~bsi.server.settings.ServerSettings`; ``bsi serve --help`` lists
them), so that every worker process builds the same app:

    BSI_DATA_DIR=/var/lib/bsi uvicorn --factory bsi.server.asgi:app_from_environment
"""

from __future__ import annotations

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
    return create_app(prepare(settings), settings)
