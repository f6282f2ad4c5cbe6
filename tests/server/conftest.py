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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from bsi.server.app import ServerSettings, create_app, prepare
from bsi.server.service import BsiService
from bsi.store.database import open_engine, upgrade
from pgcluster import PostgresUnavailable, create_database, free_port, postgres_cluster

START = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
HMAC_KEY = b"nanomdm-shared-secret-for-tests"
_names = itertools.count()


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class RunningServer:
    url: str
    service: BsiService
    clock: Clock
    admin_key: str
    reader_key: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, credential: str | None = None, **headers: str) -> httpx.Client:
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    @property
    def admin(self) -> httpx.Client:
        return self.client(self.admin_key)

    @property
    def reader(self) -> httpx.Client:
        return self.client(self.reader_key)

    def enrollment_token(self, group: str = "default", max_uses: int | None = None) -> str:
        response = self.admin.post(
            "/v1/admin/enrollment-tokens", json={"group": group, "max_uses": max_uses}
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    def enroll(self, group: str = "default") -> tuple[str, str]:
        response = self.client().post("/v1/enroll", json={"token": self.enrollment_token(group)})
        assert response.status_code == 201, response.text
        body: dict[str, str] = response.json()
        return body["device_id"], body["credential"]

    def device(self, group: str = "default") -> tuple[str, httpx.Client]:
        device_id, credential = self.enroll(group)
        return device_id, self.client(credential)

    def recompute(self) -> Any:
        response = self.admin.post("/v1/admin/decisions/recompute")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    try:
        with postgres_cluster() as base:
            engine = open_engine(create_database(base, "bsi_server_template"))
            upgrade(engine)
            engine.dispose()
            yield base
    except PostgresUnavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {error}")
        pytest.skip(f"PostgreSQL not available here: {error}")


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningServer]:
    database_url = None
    if request.param == "postgresql":
        base = request.getfixturevalue("postgres_base")
        name = f"bsi_server_{os.getpid()}_{next(_names)}"
        database_url = create_database(base, name, "bsi_server_template")
    settings = ServerSettings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        nanomdm_hmac_key=HMAC_KEY,
        max_body_bytes=64 * 1024,
        last_seen_flush_seconds=0.2,
    )
    clock = Clock()
    service = prepare(settings, clock)
    admin_key = service.store.create_api_key("test-admin", "admin", clock())
    reader_key = service.store.create_api_key("test-reader", "read-only", clock())
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
        service.store.engine.dispose()
