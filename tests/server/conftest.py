"""The real app, over a SQLite file and over a real PostgreSQL.

``server`` builds the app ``bsi serve`` builds and answers requests in this
process (tests/inprocess.py: lifespan, background tasks and long polls as under
uvicorn, no socket). Tests marked ``real_socket`` get the same app served by
uvicorn in a thread on a free 127.0.0.1 port instead: the end-to-end paths where
the bytes on a connection are part of what is tested. Either way tests talk to
it with httpx clients from :class:`server_support.RunningServer`. The clock is
the one thing set by the test: Apple's first supplements were current in March
2026, so the server's "now" starts on 2026-03-20 and tests move it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from bsi.server.app import ServerSettings, create_app, prepare
from inprocess import InProcessApp
from migrated import sqlite_copy
from pgcluster import free_port
from server_support import HMAC_KEY, WEBHOOK_KEY, Clock, RunningServer


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres_database")()
    else:
        sqlite_copy(tmp_path / "data")
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
    app = create_app(service, settings)
    serve = on_a_port if request.node.get_closest_marker("real_socket") else in_process
    try:
        with serve(app) as (url, transport):
            running = RunningServer(url, service, clock, admin_key, reader_key, transport)
            try:
                yield running
            finally:
                for client in running.clients:
                    client.close()
    finally:
        service.close()


@contextlib.contextmanager
def in_process(app: FastAPI) -> Iterator[tuple[str, httpx.BaseTransport]]:
    answering = InProcessApp(app).start()
    try:
        yield "http://bsi.test", answering
    finally:
        answering.stop()


@contextlib.contextmanager
def on_a_port(app: FastAPI) -> Iterator[tuple[str, None]]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", None
    finally:
        uvicorn_server.should_exit = True
        thread.join(timeout=20)


def key_file(path: Path, key: bytes) -> Path:
    """A NanoMDM key file as an operator writes it (with a final newline)."""
    path.write_bytes(key + b"\n")
    return path
