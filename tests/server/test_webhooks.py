"""Webhooks on the real server: signed JSON POSTs to a real receiver, per event kind,
retried with backoff and in order; bad configurations refused."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bsi.server.webhooks import Webhooks
from pgcluster import free_port
from server_support import RunningServer

SECRET = "a-shared-secret-for-tests"
BUILD = "25D771280a"
pytestmark = pytest.mark.server_settings(webhook_seconds=0.1)


@dataclass
class Receiver:
    url: str
    answers: list[int] = field(default_factory=list)
    """Status codes to answer, in turn (200 once they run out)."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def wait(self, count: int, seconds: float = 20) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            assert time.monotonic() < deadline, self.received
            time.sleep(0.05)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    port = free_port()
    state = Receiver(f"http://127.0.0.1:{port}/hook")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state.answers.pop(0) if state.answers else 200
            if status == 200:
                state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(  # shutdown() waits for the next poll (0.5 s by default)
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def import_catalogue(server: RunningServer, shared_data: Path) -> None:
    body = (shared_data / "sofa" / "gdmf_cached.json").read_bytes()
    assert server.admin.post("/v1/admin/catalog", content=body).status_code == 200


def test_events_of_the_kinds_asked_for_are_posted_signed(
    server: RunningServer, shared_data: Path, receiver: Receiver
) -> None:
    import_catalogue(server, shared_data)
    hook = {"url": receiver.url, "secret": SECRET, "kinds": ["supplement-withdrawn"]}
    added = server.admin.post("/v1/admin/webhooks", json=hook)
    assert added.status_code == 201, added.text
    assert "secret" not in added.json()
    assert server.admin.post(f"/v1/admin/supplements/macOS/{BUILD}/pause").is_success
    assert server.admin.post(f"/v1/admin/supplements/macOS/{BUILD}/withdraw").is_success
    ((headers, body),) = receiver.wait(1)
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-bsi-signature"], expected)
    assert headers["x-bsi-event"] == "supplement-withdrawn"
    event = json.loads(body)
    assert (event["kind"], event["actor"], event["supplement"]) == (
        "supplement-withdrawn",
        "test-admin",
        BUILD,
    )
    assert headers["x-bsi-delivery"] == str(event["id"])
    time.sleep(0.5)
    assert len(receiver.received) == 1  # the pause was not asked for


def test_a_failed_delivery_is_retried_with_backoff_and_in_order(
    server: RunningServer, shared_data: Path, receiver: Receiver
) -> None:
    import_catalogue(server, shared_data)
    receiver.answers = [503]
    hook = {"url": receiver.url, "secret": SECRET, "kinds": ["supplement-paused"]}
    hook_id = server.admin.post("/v1/admin/webhooks", json=hook).json()["id"]
    builds = [
        (s["platform"], s["build"]) for s in server.reader.get("/v1/admin/supplements").json()
    ][:2]
    for platform, build in builds:
        assert server.admin.post(f"/v1/admin/supplements/{platform}/{build}/pause").is_success
    deadline = time.monotonic() + 20
    while True:
        (listed,) = server.reader.get("/v1/admin/webhooks").json()
        if listed["failed_attempts"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert listed["id"] == hook_id
    assert listed["last_error"] == "answered HTTP 503"
    assert listed["retry_at"] == "2026-03-20T12:00:02+00:00"  # 2 s after the first try
    time.sleep(0.5)
    assert receiver.received == []  # waiting for its backoff: the server's clock stands
    server.clock.advance(seconds=3)
    bodies = [json.loads(body) for _, body in receiver.wait(2)]
    assert [b["supplement"] for b in bodies] == [build for _, build in builds]
    deadline = time.monotonic() + 20  # the receiver answered; the server then records it
    while server.reader.get("/v1/admin/webhooks").json()[0]["delivered_through"] != bodies[1]["id"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (listed,) = server.reader.get("/v1/admin/webhooks").json()
    assert (listed["failed_attempts"], listed["last_error"]) == (0, None)
    assert server.admin.delete(f"/v1/admin/webhooks/{hook_id}").status_code == 204
    assert server.reader.get("/v1/admin/webhooks").json() == []
    assert server.admin.delete(f"/v1/admin/webhooks/{hook_id}").status_code == 404


def test_several_workers_send_each_event_once(
    server: RunningServer, shared_data: Path, receiver: Receiver
) -> None:
    """Another worker on the same database delivers too (its POSTs slower than the
    server's own): every event reaches the receiver once, in order."""
    import_catalogue(server, shared_data)
    hook = {"url": receiver.url, "secret": SECRET, "kinds": ["supplement-paused"]}
    assert server.admin.post("/v1/admin/webhooks", json=hook).status_code == 201

    def slow_post(url: str, body: bytes, headers: dict[str, str]) -> int:
        time.sleep(0.2)
        return httpx.post(url, content=body, headers=headers, timeout=10).status_code

    other = Webhooks(server.service.rollouts.store, server.clock, post=slow_post)
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            other.deliver()
            time.sleep(0.01)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        builds = [
            (s["platform"], s["build"]) for s in server.reader.get("/v1/admin/supplements").json()
        ][:3]
        for platform, build in builds:
            assert server.admin.post(f"/v1/admin/supplements/{platform}/{build}/pause").is_success
        receiver.wait(3)
        time.sleep(1.0)  # long enough for a second POST of any of them
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
    ids = [json.loads(body)["id"] for _, body in receiver.received]
    assert ids == sorted(set(ids)), ids
    assert len(ids) == 3


@pytest.mark.parametrize(
    ("hook", "says"),
    [
        ({"url": "ftp://x/y", "secret": SECRET, "kinds": ["rollout-halted"]}, "webhook.url"),
        ({"url": "https://x/y", "secret": "short", "kinds": ["rollout-halted"]}, "secret"),
        ({"url": "https://x/y", "secret": SECRET, "kinds": []}, "webhook.kinds"),
        ({"url": "https://x/y", "secret": SECRET, "kinds": ["halted"]}, "no event kind"),
        ({"url": "https://x/y", "secret": SECRET, "kinds": ["rollout-halted"], "x": 1}, "'x'"),
    ],
)
def test_bad_webhooks_are_refused_and_change_nothing(
    server: RunningServer, hook: dict[str, Any], says: str
) -> None:
    refused = server.admin.post("/v1/admin/webhooks", json=hook)
    assert refused.status_code == 400
    assert says in refused.json()["message"]
    assert server.reader.get("/v1/admin/webhooks").json() == []
    assert server.reader.post("/v1/admin/webhooks", json=hook).status_code == 403
