"""Wake-ups across server processes: two real ``bsi serve`` behind a real HAProxy.

Devices long-poll ``/v1/ddm/wait`` through the balancer (HAProxy puts each
request on either process: its answer names the process); a change made
through either process, talking to it directly, must answer every waiting
device within 1 s, and what each woken device then reads through the
balancer must already show the change (a process's cached catalogue is not
served after its wake-up). On SQLite (two processes on one file) and on
PostgreSQL (LISTEN/NOTIFY, and its listening connections killed).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest

from bsi.store.database import open_engine
from bsi.store.store import Store
from bsi.store.wakeups import LISTENER_NAME
from debs import require
from pgcluster import TEMPLATE, create_database, drop_database, free_port
from running import bsi_serve, bsi_serving
from server_support import image_catalog

WOKEN_WITHIN = 1.0
"""Seconds from a change to every waiting device's answer (issue 18's goal)."""
DEVICES = 8
BACKEND = "x-bsi-backend"
"""The response header HAProxy adds: which process answered."""
PLATFORM, BUILD = "debian", "12C1000a"
CATALOG = image_catalog(BUILD)

# Caches far longer than the test: a process that served a woken device from its cache
# would show the old state. The wake-up settings are the defaults.
SERVE = ("--cache-seconds", "600")


@dataclass
class Fleet:
    """Two processes (``a``, ``b``), HAProxy in front (``balancer``), an admin key."""

    a: str
    b: str
    balancer: str
    key: str
    database_url: str

    def admin(self, url: str) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {self.key}"})

    def devices(self, n: int) -> list[httpx.Client]:
        with self.admin(self.a) as admin:
            token = admin.post("/v1/admin/enrollment-tokens", json={"group": "default"})
            assert token.status_code == 201, token.text
        clients = []
        for _ in range(n):
            enrolled = httpx.post(
                f"{self.balancer}/v1/enroll", json={"token": token.json()["token"]}
            )
            assert enrolled.status_code == 201, enrolled.text
            credential = enrolled.json()["credential"]
            clients.append(
                httpx.Client(
                    base_url=self.balancer,
                    headers={"Authorization": f"Bearer {credential}"},
                    timeout=60,
                )
            )
        return clients


HAPROXY = """global
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend devices
    bind 127.0.0.1:{port}
    default_backend bsi
backend bsi
    balance roundrobin
    http-response set-header {header} %[srv_name]
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
"""


@contextlib.contextmanager
def haproxy(tmp_path: Path, a: str, b: str) -> Iterator[str]:
    """HAProxy (Debian's package) balancing ``a`` and ``b`` round robin; yields its URL."""
    binary = require("haproxy", "haproxy")
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY.format(port=port, header=BACKEND, a=a.rsplit(":", 1)[1], b=b.rsplit(":", 1)[1])
    )
    process = subprocess.Popen(
        [binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "haproxy did not come up"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    """Started once per backend for this module's tests (a start costs seconds); each
    test enrolls its own devices and reads the generation it starts from."""
    require("haproxy", "haproxy")  # before starting anything
    tmp_path = tmp_path_factory.mktemp("fleet")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            data = tmp_path / "data"
            a = stack.enter_context(bsi_serve("--data-dir", data, *SERVE))  # migrates
            b = stack.enter_context(bsi_serve("--data-dir", data, *SERVE))
            key = (data / "admin-api-key").read_text().strip()
            url = f"sqlite:///{(data / 'bsi.db').resolve()}"
        else:
            base = request.getfixturevalue("postgres_base")
            name = f"bsi_wakeups_{os.getpid()}"
            url = create_database(base, name, TEMPLATE)
            stack.callback(drop_database, base, name)
            engine = open_engine(url)
            key = Store(engine).create_api_key("ops", "admin", datetime.now(UTC))
            engine.dispose()
            a = stack.enter_context(bsi_serve("--database-url", url, *SERVE))
            b = stack.enter_context(bsi_serve("--database-url", url, *SERVE))
        balancer = stack.enter_context(haproxy(tmp_path, a, b))
        yield Fleet(a, b, balancer, key, url)


def wait_all(
    devices: list[httpx.Client],
    generations: list[int],
    change: Callable[[], None],
    waiting: Callable[[], None] = lambda: None,
) -> list[tuple[dict[str, Any], str, float]]:
    """Every device long-polls through the balancer; ``change`` is made once all wait
    (and ``waiting`` has looked at them). Returns each answer, the process that gave
    it (HAProxy's header), and its seconds after the change."""
    started: list[float] = []

    def poll(device: httpx.Client, generation: int) -> tuple[dict[str, Any], str, float]:
        answer = device.get("/v1/ddm/wait", params={"generation": generation, "timeout": 30})
        assert answer.status_code == 200, answer.text
        return answer.json(), answer.headers.get(BACKEND, ""), time.monotonic()

    with ThreadPoolExecutor(len(devices)) as pool:
        futures = [pool.submit(poll, d, g) for d, g in zip(devices, generations, strict=True)]
        time.sleep(1.0)  # every long poll is held by a process
        assert not any(f.done() for f in futures), [f.result() for f in futures if f.done()]
        waiting()
        started.append(time.monotonic())
        change()
        results = [f.result() for f in futures]
    return [(body, backend, at - started[0]) for body, backend, at in results]


def state_seen(device: httpx.Client) -> tuple[str, str]:
    """The supplement's state as the device reads it through the balancer, and from where."""
    response = device.get("/v1/ddm/catalog", params={"platform": PLATFORM})
    assert response.status_code == 200, response.text
    (supplement,) = response.json()["supplements"]
    return supplement["state"], response.headers[BACKEND]


def test_a_change_through_either_process_wakes_every_device_behind_the_balancer(
    fleet: Fleet,
) -> None:
    with fleet.admin(fleet.a) as admin:
        assert admin.post("/v1/admin/catalog", json=CATALOG).is_success
    devices = fleet.devices(DEVICES)
    # Both processes cache the catalogue as published (for 600 s).
    seen = [state_seen(d) for d in devices for _ in range(2)]
    assert {state for state, _ in seen} == {"published"}
    assert {backend for _, backend in seen} == {"a", "b"}
    generations = [
        d.get("/v1/ddm/wait", params={"timeout": 0.01}).json()["generation"] for d in devices
    ]

    for through, action in [(fleet.a, "wake"), (fleet.b, "pause"), (fleet.a, "resume")]:
        expected = {"pause": "paused", "resume": "published"}.get(action)

        def change(url: str = through, action: str = action) -> None:
            with fleet.admin(url) as admin:
                if action == "wake":
                    assert admin.post("/v1/admin/wake").is_success
                else:
                    path = f"/v1/admin/supplements/{PLATFORM}/{BUILD}/{action}"
                    assert admin.post(path).is_success

        answers = wait_all(devices, generations, change)
        slowest = max(seconds for _, _, seconds in answers)
        print(f"{action} through {through}: every device answered within {slowest:.3f} s")
        assert {backend for _, backend, _ in answers} == {"a", "b"}, answers
        for body, backend, seconds in answers:
            assert body["check_in"] is True, (action, backend, body)
            assert seconds < WOKEN_WITHIN, (action, backend, seconds)
        generations = [body["generation"] for body, _, _ in answers]
        assert len(set(generations)) == 1  # one generation, whichever process answered
        if expected:  # what a woken device reads, from either process, is the change
            after = [state_seen(d) for d in devices for _ in range(2)]
            assert {state for state, _ in after} == {expected}, (action, after)
            assert {backend for _, backend in after} == {"a", "b"}


def test_a_generation_from_one_process_means_the_same_to_the_other(fleet: Fleet) -> None:
    (device,) = fleet.devices(1)
    headers = device.headers
    with fleet.admin(fleet.b) as admin:
        from_b = admin.post("/v1/admin/wake").json()["generation"]
    time.sleep(0.5)
    # Process a, asked with b's generation, has nothing newer: it holds the poll.
    started = time.monotonic()
    held = httpx.get(
        f"{fleet.a}/v1/ddm/wait", params={"generation": from_b, "timeout": 0.5}, headers=headers
    ).json()
    assert held == {"generation": from_b, "check_in": False}
    assert time.monotonic() - started >= 0.45
    # A generation ahead of the database is not this deployment's: answered at once.
    foreign = httpx.get(
        f"{fleet.a}/v1/ddm/wait",
        params={"generation": from_b + 1000, "timeout": 30},
        headers=headers,
    ).json()
    assert foreign == {"generation": from_b, "check_in": True}

    # b's generation held on a, then a change through b answers it with b's next.
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            httpx.get,
            f"{fleet.a}/v1/ddm/wait",
            params={"generation": from_b, "timeout": 30},
            headers=headers,
            timeout=60,
        )
        time.sleep(0.5)
        assert not waiting.done()
        with fleet.admin(fleet.b) as admin:
            next_b = admin.post("/v1/admin/wake").json()["generation"]
        assert waiting.result().json() == {"generation": next_b, "check_in": True}
    assert next_b == from_b + 1


def listeners(database_url: str) -> list[int]:
    """The server processes' LISTEN connections (by their application name)."""
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (LISTENER_NAME,)
        ).fetchall()
        return [pid for (pid,) in rows]


def terminate(database_url: str, pids: list[int]) -> None:
    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        for pid in pids:
            connection.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_killed_notify_listeners_reconnect_and_every_device_is_still_woken(
    fleet: Fleet,
) -> None:
    if not fleet.database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's (on SQLite each process reads the row)")
    devices = fleet.devices(DEVICES)
    generations = [
        d.get("/v1/ddm/wait", params={"timeout": 0.01}).json()["generation"] for d in devices
    ]
    killed = listeners(fleet.database_url)
    assert len(killed) == 2  # one per process

    def cut_then_wake() -> None:
        terminate(fleet.database_url, killed)
        with fleet.admin(fleet.a) as admin:  # made while b's listener is down
            assert admin.post("/v1/admin/wake").is_success

    answers = wait_all(devices, generations, cut_then_wake)
    # b catches up on its new connection (it reads the generation first): late by the
    # reconnect's backoff, never missed, and told the same generation as a's devices.
    assert {backend for _, backend, _ in answers} == {"a", "b"}
    assert all(body["check_in"] for body, _, _ in answers), answers
    assert len({body["generation"] for body, _, _ in answers}) == 1
    assert max(seconds for _, _, seconds in answers) < 5

    deadline = time.monotonic() + 10
    while len(back := listeners(fleet.database_url)) < 2 or set(back) & set(killed):
        assert time.monotonic() < deadline, back
        time.sleep(0.1)

    generations = [body["generation"] for body, _, _ in answers]
    for through in (fleet.b, fleet.a):

        def wake(url: str = through) -> None:
            with fleet.admin(url) as admin:
                assert admin.post("/v1/admin/wake").is_success

        answers = wait_all(devices, generations, wake)
        assert {backend for _, backend, _ in answers} == {"a", "b"}
        for body, backend, seconds in answers:
            assert body["check_in"] is True, (backend, body)
            assert seconds < WOKEN_WITHIN, (backend, seconds)
        generations = [body["generation"] for body, _, _ in answers]


def held_by(server: subprocess.Popen[str], port: int) -> dict[int, int]:
    """How many open connections to ``port`` each worker of ``server`` holds (a worker:
    a child process listening on it)."""
    held = {}
    for child in psutil.Process(server.pid).children():
        mine = [c for c in child.net_connections("tcp") if c.laddr and c.laddr.port == port]
        if any(c.status == psutil.CONN_LISTEN for c in mine):
            held[child.pid] = sum(c.status == psutil.CONN_ESTABLISHED for c in mine)
    return held


def test_sqlite_workers_wake_each_others_devices(tmp_path: Path) -> None:
    """``bsi serve --workers 2`` on SQLite: the workers share one listening socket, so a
    change lands on one of them; the devices waiting on the other are woken too."""
    data = tmp_path / "data"
    with bsi_serving("--data-dir", data, "--workers", "2", *SERVE) as (url, server):
        port = int(url.rsplit(":", 1)[1])
        key = (data / "admin-api-key").read_text().strip()
        fleet = Fleet(url, url, url, key, f"sqlite:///{data / 'bsi.db'}")
        devices = fleet.devices(16)
        generations = [
            d.get("/v1/ddm/wait", params={"timeout": 0.01}).json()["generation"] for d in devices
        ]
        holding: list[dict[int, int]] = []

        def both_hold_waiters() -> None:
            holding.append(held_by(server, port))

        def wake() -> None:
            with fleet.admin(url) as admin:
                assert admin.post("/v1/admin/wake").is_success

        answers = wait_all(devices, generations, wake, both_hold_waiters)
        (held,) = holding
        assert len(held) == 2, held
        assert sum(held.values()) >= len(devices), held
        if min(held.values()) == 0:
            pytest.skip(f"the kernel gave every waiting device to one worker: {held}")
        for body, _, seconds in answers:
            assert body["check_in"] is True, body
            assert seconds < WOKEN_WITHIN, seconds
