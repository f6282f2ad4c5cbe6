"""The web console over plain HTTP: sign-in cookie attributes, CSRF and role checks on
writes (refused writes change nothing and show the server's message), expired and
forged sessions. The browser's view is tests/server/test_console_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from test_admin import import_real_catalogue
from test_rollouts import BUILD, PLAN, ROLLOUT, decision, fleet

from bsi.domain.events import AUTOMATIC, EventKind
from bsi.server.console import HISTORY_PAGE
from bsi.server.console.session import COOKIE, LIFETIME
from bsi.store.events import NewEvent
from bsi.store.store import Store
from reports import failed_install_report
from server_support import RunningServer

pytestmark = pytest.mark.parametrize("server", ["sqlite"], indirect=True)
FORM = {"content-type": "application/x-www-form-urlencoded"}


def signed_in(server: RunningServer, key: str) -> httpx.Client:
    client = server.client()
    response = client.post("/login", content=f"api_key={key}".encode(), headers=FORM)
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert f"Max-Age={int(LIFETIME.total_seconds())}" in cookie
    return client


def csrf_of(client: httpx.Client) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/supplements").text)
    assert match, "no write form on the supplements page"
    return match.group(1)


def state_of(server: RunningServer, build: str) -> str:
    rows = server.reader.get("/v1/admin/supplements").json()
    return next(str(r["state"]) for r in rows if r["build"] == build)


def test_sign_in_refuses_a_wrong_key_and_pages_need_a_session(server: RunningServer) -> None:
    anonymous = server.client()
    assert anonymous.get("/").status_code == 303
    refused = anonymous.post("/login", content=b"api_key=not-a-key", headers=FORM)
    assert refused.status_code == 401
    assert "unknown or revoked API key" in refused.text
    assert COOKIE not in refused.headers.get("set-cookie", "")

    forged = server.client()
    forged.cookies.set(COOKIE, "00.9999999999.deadbeef")
    assert forged.get("/cves").headers["location"] == "/login"
    not_ascii = server.client().get("/cves", headers={"cookie": f"{COOKIE}=00.1.é".encode()})
    assert not_ascii.headers["location"] == "/login"  # refused, not a 500

    client = signed_in(server, server.reader_key)
    assert client.get("/").status_code == 200
    server.clock.advance(seconds=LIFETIME.total_seconds() + 1)
    assert client.get("/").status_code == 303  # expired: sign in again


def test_writes_need_the_csrf_token_and_an_admin_key(
    server: RunningServer, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    build = "25D771280a"
    path = f"/supplements/macOS/{build}/withdraw"

    admin = signed_in(server, server.admin_key)
    token = csrf_of(admin)
    no_token = admin.post(path, content=b"", headers=FORM)
    assert no_token.status_code == 403
    assert "CSRF" in no_token.text
    wrong = admin.post(path, content=b"csrf=" + b"0" * 64, headers=FORM)
    assert wrong.status_code == 403
    not_ascii = admin.post(path, content="csrf=é".encode(), headers=FORM)
    assert not_ascii.status_code == 403  # refused, not a 500
    assert state_of(server, build) == "published"

    reader = signed_in(server, server.reader_key)
    assert 'data-action="' not in reader.get("/supplements").text
    reader_token = re.search(r'name="csrf" value="([0-9a-f]+)"', reader.get("/").text)
    assert reader_token is None  # no forms at all for a read-only key
    assert state_of(server, build) == "published"

    bogus = admin.post(
        f"/supplements/macOS/{build}/explode", content=f"csrf={token}".encode(), headers=FORM
    )
    assert bogus.status_code == 404
    assert "no supplement action" in bogus.text

    done = admin.post(path, content=f"csrf={token}".encode(), headers=FORM)
    assert done.status_code == 200
    assert "is now withdrawn" in done.text
    assert state_of(server, build) == "withdrawn"
    events = server.reader.get("/v1/admin/events", params={"kind": "supplement-withdrawn"})
    assert [e["actor"] for e in events.json()["events"]] == ["test-admin"]  # the key's name

    resumed = admin.post(
        f"/supplements/macOS/{build}/resume", content=f"csrf={token}".encode(), headers=FORM
    )
    assert resumed.status_code == 409  # withdrawn is final: the service's own refusal
    assert "withdrawn" in resumed.text
    assert state_of(server, build) == "withdrawn"


def test_a_revoked_key_ends_its_session(server: RunningServer) -> None:
    key = server.admin.post("/v1/admin/api-keys", json={"name": "t", "role": "read-only"}).json()
    client = signed_in(server, key["key"])
    assert client.get("/devices").status_code == 200
    server.service.stores.credentials.revoke_api_key("t")
    assert client.get("/devices").headers["location"] == "/login"


def test_an_outcome_this_bsi_does_not_know_is_shown_as_unknown(server: RunningServer) -> None:
    from sqlalchemy import update

    from bsi.store.models import Device

    device_id, _ = server.device()
    store = server.service.stores.database
    assert isinstance(store, Store)
    with store.engine.begin() as connection:  # a decision written by another bsi version
        connection.execute(
            update(Device).where(Device.id == device_id).values(decision_outcome="later-kind")
        )
    page = signed_in(server, server.reader_key).get("/").text
    cards = dict(re.findall(r'data-outcome="([a-z-]+)">\s*<div class="n">(\d+)</div>', page))
    assert cards["unknown"] == "1"  # counted as unknown, never as a card of its own
    assert "later-kind" not in cards
    assert "1 device bsi cannot place" in page


def halted_rollout(server: RunningServer, shared_data: Path) -> str:
    """A four-device fleet whose rollout of BUILD halted in its first wave: the canary
    device failed its health check. Returns the canary's id."""
    devices = fleet(server, shared_data)
    assert server.admin.put(ROLLOUT, json=PLAN).status_code == 201
    server.recompute()  # over a real socket the route's own recompute runs after its answer
    (canary,) = [d for d, _ in devices if decision(server, d)[0] != "deferred"]
    failed = failed_install_report(BUILD, "health-check-failed: exit 1")
    assert dict(devices)[canary].put("/v1/ddm/status", json=failed).status_code == 200
    server.clock.advance(hours=2)
    assert server.service.rollouts.tick() == 0  # halted as the failure was stored
    assert server.reader.get(ROLLOUT).json()["state"] == "halted"
    return canary


def test_a_rollout_on_its_supplement_page_and_its_controls(
    server: RunningServer, shared_data: Path
) -> None:
    canary = halted_rollout(server, shared_data)
    page = f"/supplements/macOS/{BUILD}"
    admin = signed_in(server, server.admin_key)
    shown = admin.get(page)
    assert shown.status_code == 200
    html = shown.text
    assert 'id="rollout" data-state="halted"' in html
    assert re.search(r'data-wave="canary" data-state="halted"', html)
    assert re.search(r'data-wave="everyone" data-state="waiting"', html)
    assert "25 % of devices" in html
    assert "by hand (advance)" in html  # a halted rollout's next wave opens by hand only
    halted = re.search(r'<div class="alert error" id="halted">(.*?)</div>', html, re.S)
    assert halted is not None
    assert canary in halted.group(1)
    assert "health-check-rollback" in halted.group(1)
    assert f'href="/devices/{canary}"' in html  # the failures table links the device
    assert set(re.findall(r'data-rollout-action="(\w+)"', html)) == {"advance", "resume", "abort"}
    assert 'data-kind="rollout-halted"' in html  # the supplement's events, newest first
    assert html.index('data-kind="rollout-halted"') < html.index('data-kind="rollout-started"')
    assert "rollout halted" in admin.get("/supplements").text  # the card says so too
    overview = admin.get("/").text  # and the overview, first thing an on-call person sees
    alert = re.search(
        rf'<div class="alert error" data-halted="{BUILD}">(.*?)</div>', overview, re.S
    )
    assert alert is not None
    assert canary in alert.group(1)

    reader = signed_in(server, server.reader_key)
    as_reader = reader.get(page).text
    assert "data-rollout-action" not in as_reader
    assert '<form method="post" action="/supplements' not in as_reader
    assert canary in as_reader  # a read-only key sees the health, not the controls

    before = server.reader.get(ROLLOUT).json()
    token = csrf_of(admin)
    forged = admin.post(f"{page}/rollout/advance", content=b"csrf=" + b"0" * 64, headers=FORM)
    assert forged.status_code == 403
    reader_token = csrf_of_page(reader, "/")
    assert reader_token is None
    bogus = admin.post(f"{page}/rollout/explode", content=f"csrf={token}".encode(), headers=FORM)
    assert bogus.status_code == 404
    assert "no rollout action" in bogus.text
    assert server.reader.get(ROLLOUT).json() == before  # refused: nothing changed

    resumed = admin.post(f"{page}/rollout/resume", content=f"csrf={token}".encode(), headers=FORM)
    assert resumed.status_code == 200, resumed.text
    assert server.reader.get(ROLLOUT).json()["state"] == "running"
    assert "data-halted" not in admin.get("/").text
    buttons = set(re.findall(r'data-rollout-action="(\w+)"', resumed.text))
    assert buttons == {"advance", "halt", "abort"}  # running: halt by hand, no resume
    again = admin.post(f"{page}/rollout/resume", content=f"csrf={token}".encode(), headers=FORM)
    assert again.status_code == 409  # the service's own refusal, shown on the page
    assert "not halted" in again.text
    (event,) = server.reader.get("/v1/admin/events", params={"kind": "rollout-resumed"}).json()[
        "events"
    ]
    assert event["actor"] == "test-admin"

    missing = admin.get("/supplements/macOS/25D000000z")
    assert missing.status_code == 404
    no_rollout = admin.get("/supplements/macOS/25D771400a")  # in the catalogue, no rollout
    assert no_rollout.status_code == 200
    assert "No rollout" in no_rollout.text
    assert "bsi admin rollouts plan set macOS 25D771400a" in no_rollout.text


def csrf_of_page(client: httpx.Client, path: str) -> str | None:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).text)
    return None if match is None else match.group(1)


def test_a_device_page_shows_its_history_newest_first_in_pages(server: RunningServer) -> None:
    device_id, _ = server.device()
    other, _ = server.device()
    now = server.clock()
    server.service.rollouts.record(
        NewEvent(EventKind.DEVICE_INSTALLED, AUTOMATIC, f"step {i}", now, device_id=device_id)
        for i in range(HISTORY_PAGE + 5)
    )
    server.service.rollouts.record(
        [NewEvent(EventKind.DEVICE_FAILED, AUTOMATIC, "not mine", now, device_id=other)]
    )
    client = signed_in(server, server.reader_key)
    first = client.get(f"/devices/{device_id}").text
    steps = [int(n) for n in re.findall(r"step (\d+)", first)]
    assert steps == list(range(HISTORY_PAGE + 4, 4, -1))  # the newest page, newest first
    assert "not mine" not in first
    older = re.search(r'href="(/devices/[^"]+\?before=\d+)#history"', first)
    assert older is not None
    second = client.get(older.group(1)).text
    assert [int(n) for n in re.findall(r"step (\d+)", second)] == [4, 3, 2, 1, 0]
    assert "Older events" not in second
    assert "?before=" not in second
    assert "Newest" in second
    bad = client.get(f"/devices/{device_id}", params={"before": "yesterday"})
    assert bad.status_code == 422  # a cursor that is not an event id
