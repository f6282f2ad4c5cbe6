"""The web console in a real browser: Debian's chromium driven by Playwright.

Signs in, checks the overview's counts against the admin API, withdraws a
supplement and advances a halted rollout from the page and sees the API's state
change, and checks that a read-only key gets no write controls. Every page is saved as a screenshot
under build/console/ (CI keeps build/ as its artifacts). One browser serves
the whole session. Without chromium or Playwright the tests skip, except
under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_admin import import_real_catalogue, report_sample_fleet
from test_console import halted_rollout
from test_rollouts import BUILD, ROLLOUT

from server_support import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "build" / "console"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
pytestmark = [
    pytest.mark.parametrize("server", ["sqlite"], indirect=True),
    pytest.mark.real_socket,  # the browser reaches the server over a connection
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the browser tests need {reason} in CI (.ci/run installs chromium)")
    pytest.skip(f"{reason} is not available here: apt-get install chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One chromium for this module's tests.

    Module scope, not session: while Playwright's sync API is open it keeps an
    event loop running in the main thread, so every later test's
    ``asyncio.run`` would fail with "cannot be called from a running event loop".
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package")
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        _unavailable("Debian's chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
            args=ARGS,
        )
        try:
            yield launched
        finally:
            launched.close()


def sign_in(browser: Any, server: RunningServer, key: str, **context: Any) -> Any:
    page = browser.new_context(**context).new_page()
    page.goto(server.url + "/")
    assert page.url.endswith("/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_overview_counts_and_a_withdraw_from_the_page(
    browser: Any, server: RunningServer, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    ids = report_sample_fleet(server)
    server.recompute()
    server.enroll()  # one device that never reports: unknown, shown first

    login = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    login.goto(server.url + "/")
    shot(login, "login")
    login.fill("#api_key", "not-a-key")
    login.click("button[type=submit]")
    assert "unknown or revoked API key" in login.text_content(".alert.error")
    login.context.close()

    page = sign_in(browser, server, server.admin_key, viewport={"width": 1280, "height": 800})
    (cookie,) = page.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    shown = {
        card.get_attribute("data-outcome"): int(card.query_selector(".n").text_content())
        for card in page.query_selector_all("#outcomes .card")
    }
    devices = server.reader.get("/v1/admin/devices", params={"limit": 10_000}).json()["devices"]
    expected: dict[str, int] = dict.fromkeys(shown, 0)
    for device in devices:
        expected[device["decision_outcome"]] += 1
    assert shown == expected
    assert shown["unknown"] >= 1
    assert "cannot place" in page.text_content(".alert.unknown")
    shot(page, "overview")

    page.click("text=see which and why")
    page.wait_for_url("**/devices?outcome=unknown")
    assert len(page.query_selector_all("#devices tbody tr")) == shown["unknown"]
    shot(page, "devices")

    page.goto(f"{server.url}/devices/{ids['mbair-m2-ops01']}")
    assert "25D771280a" in page.text_content("main")
    shot(page, "device")

    page.goto(server.url + "/cves")
    (row,) = [
        r for r in page.query_selector_all("#cves tbody tr") if "CVE-2026-20643" in r.text_content()
    ]
    api = next(
        c
        for c in server.reader.get("/v1/admin/compliance/cves").json()
        if c["cve"] == "CVE-2026-20643"
    )
    cells = row.query_selector_all("td")  # CVE, CVSS, fixed by, exposed, ...
    assert cells[3].text_content().strip() == str(api["exposed"])
    assert cells[1].text_content().strip() == "not scored"  # Apple publishes no CVSS
    shot(page, "cves")

    page.goto(server.url + "/supplements")
    shot(page, "supplements")
    card = page.locator('section[data-build="25D771280a"]')
    card.locator('button[data-action="withdraw"]').click()
    page.wait_for_selector(".alert.notice")
    assert "is now withdrawn" in page.text_content(".alert.notice")
    states = {s["build"]: s["state"] for s in server.reader.get("/v1/admin/supplements").json()}
    assert states["25D771280a"] == "withdrawn"
    assert card.locator("[data-state]").text_content() == "withdrawn"
    assert card.locator("button").count() == 0  # withdrawn is final: nothing to press

    phone = sign_in(browser, server, server.admin_key, viewport={"width": 390, "height": 844})
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    shot(phone, "overview-phone")
    phone.goto(server.url + "/supplements")
    shot(phone, "supplements-phone")


def test_a_read_only_key_sees_no_write_controls(
    browser: Any, server: RunningServer, shared_data: Path
) -> None:
    import_real_catalogue(server, shared_data)
    page = sign_in(browser, server, server.reader_key)
    page.goto(server.url + "/supplements")
    assert page.locator("section.supplement").count() > 0
    assert page.locator("button[data-action]").count() == 0
    assert page.locator("form[action^='/supplements/']").count() == 0
    assert "read-only key" in page.text_content("header")


def test_a_rollout_advanced_from_its_page_and_hidden_from_a_read_only_key(
    browser: Any, server: RunningServer, shared_data: Path
) -> None:
    canary = halted_rollout(server, shared_data)
    url = f"{server.url}/supplements/macOS/{BUILD}"

    reader = sign_in(browser, server, server.reader_key)
    reader.goto(url)
    assert reader.locator(".wave").count() == 2
    assert canary in reader.text_content("#halted")
    assert reader.locator("button").count() == 1  # sign out: no rollout or supplement controls
    assert reader.locator("form[action^='/supplements/']").count() == 0
    reader.context.close()

    page = sign_in(browser, server, server.admin_key, viewport={"width": 1280, "height": 800})
    assert canary in page.text_content(f'[data-halted="{BUILD}"]')  # the overview says first
    shot(page, "overview-halted")
    page.click("text=waves and failures")
    page.wait_for_url(url)
    assert "health-check-rollback" in page.text_content("#halted")
    assert page.locator('.wave[data-wave="canary"]').get_attribute("data-state") == "halted"
    shot(page, "supplement-rollout-halted")
    page.locator('button[data-rollout-action="advance"]').click()
    page.wait_for_selector(".alert.notice")
    body = server.reader.get(ROLLOUT).json()
    assert [w["state"] for w in body["waves"]] == ["passed", "open"]
    assert page.locator('.wave[data-wave="everyone"]').get_attribute("data-state") == "open"
    assert page.locator('button[data-rollout-action="advance"]').count() == 0  # the last wave
    (advanced,) = server.reader.get("/v1/admin/events", params={"kind": "wave-advanced"}).json()[
        "events"
    ]
    assert advanced["actor"] == "test-admin"
    assert "wave-advanced" in page.text_content("#events")
    shot(page, "supplement-rollout")
    page.goto(server.url + "/supplements")
    card = page.locator(f'section[data-build="{BUILD}"] .rollout-line')
    assert card.get_attribute("data-rollout") == "running"
    assert "wave 2 of 2 everyone" in card.text_content()
    shot(page, "supplements-rollout")

    phone = sign_in(browser, server, server.admin_key, viewport={"width": 390, "height": 844})
    phone.goto(url)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "supplement-rollout-phone")
    phone.goto(f"{server.url}/devices/{canary}")
    assert "device-failed" in phone.text_content("#events")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    shot(phone, "device-phone")
