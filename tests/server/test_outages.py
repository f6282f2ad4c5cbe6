"""Database outages: 503 + Retry-After + a JSON error, never a 500 or a hang; recovery
without a restart; /healthz (liveness) apart from /readyz (database and schema)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from bsi.server.app import FailureLog, run_every
from bsi.store.store import Store
from pgcluster import free_port
from reports import macos_report
from server_support import RunningServer


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["error"] == "Unavailable"


def engine_of(server: RunningServer) -> Engine:
    """The database under the running server, for a test that breaks it on purpose."""
    store = server.service.stores.database
    assert isinstance(store, Store)
    return store.engine


@contextlib.contextmanager
def postgres_refusing(server: RunningServer, base: str) -> Iterator[None]:
    """The server's database refuses every connection, and its open ones are cut."""
    name = engine_of(server).url.database
    dsn = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")  # type: ignore[arg-type]
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")  # type: ignore[arg-type]


@pytest.mark.parametrize("server", ["postgresql"], indirect=True)
def test_a_postgresql_outage_answers_503_and_recovers_without_a_restart(
    server: RunningServer, postgres_base: str
) -> None:
    _, device = server.device()
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    anonymous = server.client()
    assert anonymous.get("/readyz").status_code == 200
    with postgres_refusing(server, postgres_base):
        assert_unavailable(device.put("/v1/ddm/status", json=macos_report()))
        assert_unavailable(server.admin.get("/v1/admin/devices"))
        assert_unavailable(anonymous.post("/v1/enroll", json={"token": "x"}))
        assert_unavailable(anonymous.get("/readyz"))
        assert anonymous.get("/healthz").status_code == 200
    deadline = time.monotonic() + 10
    while device.put("/v1/ddm/status", json=macos_report()).status_code != 200:
        assert time.monotonic() < deadline, "did not recover"
        time.sleep(0.2)
    assert anonymous.get("/readyz").status_code == 200


def _enrolled_despite_a_slow_start(server: RunningServer) -> httpx.Client:
    """Enrol a device, retrying setup requests that meet the test's short deadline.

    Under CI load a fresh database's first writes can take longer than the 2 s
    deadline this test sets; that is setup, not the behaviour under test.
    """
    deadline = time.monotonic() + 60
    while True:
        try:
            return server.device()[1]
        except AssertionError as slow:
            if "no answer within" not in str(slow) or time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.server_settings(request_timeout_seconds=2)
def test_a_locked_or_frozen_database_answers_503_in_bounded_time(
    server: RunningServer,
) -> None:
    """Another holder of the write lock: the request gives up at its deadline."""
    device = _enrolled_despite_a_slow_start(server)
    engine = engine_of(server)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            raw = sqlite3.connect(engine.url.database or "", isolation_level=None)
            raw.execute("BEGIN EXCLUSIVE")
        else:
            connection.exec_driver_sql("LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = device.put("/v1/ddm/status", json=macos_report())
        took = time.monotonic() - started
        if engine.dialect.name == "sqlite":
            raw.execute("ROLLBACK")
            raw.close()
        else:
            connection.rollback()
    assert_unavailable(response)
    assert took < 5
    deadline = time.monotonic() + 60  # the abandoned write finishes first
    while device.put("/v1/ddm/status", json=macos_report()).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_an_unmigrated_database_is_live_but_not_ready(server: RunningServer) -> None:
    with engine_of(server).begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    anonymous = server.client()
    assert anonymous.get("/healthz").status_code == 200
    not_ready = anonymous.get("/readyz")
    assert_unavailable(not_ready)
    assert "bsi db upgrade" in not_ready.text or "schema" in not_ready.json()["message"]


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_workers_exit_with_their_supervisor_and_a_restart_takes_the_port(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "bsi", "serve", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data"), "--workers", "2"]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not _port_open(port) or httpx.get(f"http://127.0.0.1:{port}/healthz").is_error:
            assert process.poll() is None, "bsi serve exited"
            assert time.monotonic() < deadline, "bsi serve did not come up"
            time.sleep(0.2)
        return process

    first = start()
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    while _port_open(port):
        assert time.monotonic() - killed < 20, "workers outlived their supervisor"
        time.sleep(0.1)
    print(f"\nworkers gone {time.monotonic() - killed:.1f} s after the supervisor's SIGKILL")
    second = start()
    second.send_signal(signal.SIGINT)
    second.wait(timeout=30)


def test_a_background_task_failing_alike_logs_one_traceback_and_then_that_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SQLite checkpoint runs twice a second: an outage must not log a traceback at
    every beat. 40 failures alike give one traceback; the first success says so."""
    calls = 0

    def checkpoint() -> None:
        nonlocal calls
        calls += 1
        if calls <= 40:
            raise sqlite3.OperationalError("disk I/O error")

    async def run() -> None:
        task = asyncio.create_task(run_every(0.001, checkpoint, "checkpoint"))
        while calls < 45:
            await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="bsi.server"):
        asyncio.run(run())
    told = [r for r in caplog.records if r.name == "bsi.server"]
    assert [r.getMessage() for r in told] == [
        "checkpoint update failed; will retry",
        "checkpoint update works again after 40 failures",
    ]
    assert told[0].exc_info is not None
    assert told[1].exc_info is None


def test_a_failure_that_lasts_is_told_again_once_a_minute_and_another_failure_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = FailureLog("webhook", lambda: now[0])

    def fail(error: Exception) -> None:
        try:
            raise error
        except Exception as caught:
            failures.failed(caught)

    with caplog.at_level(logging.INFO, logger="bsi.server"):
        for second in range(0, 130):  # the same failure every second for 130 s
            now[0] = float(second)
            fail(OSError("database is locked"))
        fail(ValueError("another fault"))  # unlike the last: its traceback at once
        failures.succeeded()
    told = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert told == [
        ("webhook update failed; will retry", True),
        ("webhook update still failing (61 times so far): OSError: database is locked", False),
        ("webhook update still failing (121 times so far): OSError: database is locked", False),
        ("webhook update failed; will retry", True),
        ("webhook update works again after 131 failures", False),
    ]


def test_failures_that_differ_only_in_their_statements_parameters_or_flap_are_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A SQLAlchemy error's text holds the statement's parameters (the last-seen flush's
    timestamps change at every beat): the kind is the database's own message. A task
    that fails and works in turn is told once per window, not at every flap."""
    now = [0.0]
    failures = FailureLog("last-seen", lambda: now[0])

    def fail(beat: int) -> None:
        try:
            raise OperationalError(
                "UPDATE devices SET last_seen_at=?",
                {"now": beat},
                sqlite3.OperationalError("disk I/O error"),
            )
        except OperationalError as caught:
            failures.failed(caught)

    with caplog.at_level(logging.INFO, logger="bsi.server"):
        for beat in range(20):
            now[0] = beat * 0.5
            fail(beat)
            if beat % 2:
                failures.succeeded()
    told = [r.getMessage() for r in caplog.records]
    assert told == [
        "last-seen update failed; will retry",
        "last-seen update works again after 2 failures",
    ]
