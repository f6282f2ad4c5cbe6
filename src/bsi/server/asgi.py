"""The ASGI entry for ``bsi serve`` and for any ASGI server run by hand.

Settings come from the environment so that every worker process builds the
same app: ``BSI_DATA_DIR``, ``BSI_DATABASE_URL``, ``BSI_NANOMDM_HMAC_KEY_FILE``,
``BSI_NANOMDM_RESPONSE_HMAC_KEY_FILE``, ``BSI_NANOMDM_WEBHOOK_HMAC_KEY_FILE``,
``BSI_NANOMDM_ALLOW_UNSIGNED_FROM`` (comma-separated),
``BSI_MAX_BODY_BYTES``, ``BSI_CACHE_SECONDS``, ``BSI_TUF_REPO_DIR``,
``BSI_TUF_KEYS_DIR``.

    uvicorn --factory bsi.server.asgi:app_from_environment
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from fastapi import FastAPI

from bsi.errors import InvalidInput
from bsi.server.app import ServerSettings, create_app, prepare
from bsi.server.nanomdm import networks, read_key_file


def settings_from_environment() -> ServerSettings:
    key_file = os.environ.get("BSI_NANOMDM_HMAC_KEY_FILE")
    try:
        return ServerSettings(
            data_dir=Path(os.environ.get("BSI_DATA_DIR", "bsi-data")),
            database_url=os.environ.get("BSI_DATABASE_URL") or None,
            nanomdm_hmac_key=read_key_file(Path(key_file)) if key_file else None,
            nanomdm_response_hmac_key=_key("BSI_NANOMDM_RESPONSE_HMAC_KEY_FILE"),
            nanomdm_webhook_hmac_key=_key("BSI_NANOMDM_WEBHOOK_HMAC_KEY_FILE"),
            nanomdm_unsigned_from=networks(
                filter(None, os.environ.get("BSI_NANOMDM_ALLOW_UNSIGNED_FROM", "").split(","))
            ),
            max_body_bytes=int(os.environ.get("BSI_MAX_BODY_BYTES", 1024 * 1024)),
            cache_seconds=float(os.environ.get("BSI_CACHE_SECONDS", 2.0)),
            tuf_repo_dir=_path("BSI_TUF_REPO_DIR"),
            tuf_keys_dir=_path("BSI_TUF_KEYS_DIR"),
        )
    except ValueError as error:
        raise InvalidInput(f"bad BSI_* setting in the environment: {error}") from error


def _key(name: str) -> bytes | None:
    path = _path(name)
    return read_key_file(path) if path else None


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


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
