"""The running test server's handle: its URL, service, clock and ready-made clients.

Clients reach the app through ``transport`` (the in-process app, tests/inprocess.py)
or, when it is ``None``, over a real connection to ``url``; tests make every client
with :meth:`RunningServer.http` or :meth:`RunningServer.client` so they work both ways.

Lives outside ``conftest.py`` so test modules can import it by a unique name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import event

from bsi.server.service import BsiService

START = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
HMAC_KEY = b"nanomdm-shared-secret-for-tests"
WEBHOOK_KEY = b"nanomdm-webhook-secret-for-tests"


def image_catalog(
    build: str = "12C1000a", digest: str = "sha256:" + "5f" * 32, cves: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A ``bsi-catalog/1`` document with Debian 12 and one container-image supplement,
    ``build`` for the base image ``digest``."""
    supplement: dict[str, Any] = {
        "platform": "debian",
        "version": "12 (a)",
        "build": build,
        "prerequisite": {"image": {"digest": digest}},
    }
    if cves:
        supplement["cves"] = list(cves)
    return {
        "format": "bsi-catalog/1",
        "releases": [{"platform": "debian", "version": "12"}],
        "supplements": [supplement],
    }


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
    transport: httpx.BaseTransport | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    def http(self, **options: Any) -> httpx.Client:
        """A client of this server (closed after the test); ``options`` as for httpx.Client."""
        client = httpx.Client(transport=self.transport, **{"timeout": 30, **options})
        self.clients.append(client)
        return client

    def client(self, credential: str | None = None, **headers: str) -> httpx.Client:
        if credential:
            headers["Authorization"] = f"Bearer {credential}"
        return self.http(base_url=self.url, headers=headers)

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


@contextmanager
def sql_statements(server: RunningServer, *, this_thread: bool = False) -> Iterator[list[str]]:
    """The SQL statements the server's database engine runs inside the block, in order;
    with ``this_thread``, only those the calling thread runs (not the server's background
    work, such as the wake-up poll that reads the generation row on SQLite)."""
    statements: list[str] = []
    caller = threading.get_ident()

    def executed(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if not this_thread or threading.get_ident() == caller:
            statements.append(statement)

    engine = server.service.stores.database.engine
    event.listen(engine, "before_cursor_execute", executed)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", executed)
