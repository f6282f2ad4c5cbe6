"""The real server on loopback, over a SQLite file and over a real PostgreSQL.

``server`` starts uvicorn in a thread on a free 127.0.0.1 port with the app
``bsi serve`` builds; tests talk to it over HTTP with httpx. The clock is the
one thing set by the test: Apple's first supplements were current in March
2026, so the server's "now" starts on 2026-03-20 and tests move it.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from bsi.server.app import ServerSettings, create_app, prepare
from pgcluster import TEMPLATE, create_database, free_port
from server_support import HMAC_KEY, WEBHOOK_KEY, Clock, RunningServer

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    database_url = None
    if request.param == "postgresql":
        base = request.getfixturevalue("postgres_base")
        name = f"bsi_server_{os.getpid()}_{next(_names)}"
        database_url = create_database(base, name, TEMPLATE)
    marker = request.node.get_closest_marker("server_settings")
    fields = {
        "nanomdm_hmac_key_file": key_file(tmp_path / "dm.key", HMAC_KEY),
        "nanomdm_webhook_hmac_key_file": key_file(tmp_path / "webhook.key", WEBHOOK_KEY),
        "max_body_bytes": 64 * 1024,
        "last_seen_flush_seconds": 0.2,
        **(marker.kwargs if marker else {}),
    }
    settings = ServerSettings(data_dir=tmp_path / "data", database_url=database_url, **fields)
    clock = Clock()
    service = prepare(settings, clock)
    admin_key = service.create_api_key("test-admin", "admin")
    reader_key = service.create_api_key("test-reader", "read-only")
    port = free_port()
    config = uvicorn.Config(
        create_app(service, settings), host="127.0.0.1", port=port, log_level="warning"
    )
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    running = RunningServer(f"http://127.0.0.1:{port}", service, clock, admin_key, reader_key)
    try:
        yield running
    finally:
        for client in running.clients:
            client.close()
        uvicorn_server.should_exit = True
        thread.join(timeout=20)
        service.close()


def key_file(path: Path, key: bytes) -> Path:
    """A NanoMDM key file as an operator writes it (with a final newline)."""
    path.write_bytes(key + b"\n")
    return path
