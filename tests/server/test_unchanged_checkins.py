"""The fast paths answer exactly as their routes do, or not at all.

:class:`bsi.server.ddm.UnchangedCheckins` (``GET tokens``) and
:class:`bsi.server.ddm.StatusReports` (``PUT status``) are each put in front of
an app that answers 599 to everything, so every request they do not answer
themselves shows; their answers are compared with the real server's route for
the same request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bsi.domain.declarations import software_update_settings
from bsi.server.ddm import (
    CatalogAnswers,
    DeviceCatalogs,
    LongPolls,
    StatusReports,
    UnchangedCheckins,
)
from bsi.server.wakeup import Wakeups
from reports import macos_report
from server_support import RunningServer, sql_statements

NOT_ANSWERED = 599
MAX_BODY = 64 * 1024
"""The body limit the test server has (tests/server/conftest.py)."""


async def route_elsewhere(scope: Scope, receive: Receive, send: Send) -> None:
    await Response(status_code=NOT_ANSWERED)(scope, receive, send)


class FastPath:
    """Requests to the fast path alone, as one device (``credential``, extra headers)."""

    def __init__(
        self,
        server: RunningServer,
        credential: str | None,
        status: bool = False,
        catalog: bool = False,
        **headers: str,
    ) -> None:
        """``status``: the status-report fast path; ``catalog``: the catalogue one; else
        the unchanged check-in one."""
        if credential is not None:
            headers["Authorization"] = f"Bearer {credential}"
        self.app: ASGIApp = UnchangedCheckins(route_elsewhere, server.service)
        if status:
            self.app = StatusReports(route_elsewhere, server.service, MAX_BODY)
        elif catalog:
            self.app = DeviceCatalogs(route_elsewhere, server.service, CatalogAnswers())
        self.headers = headers

    def request(
        self, method: str, path: str, content: bytes | None = None, **headers: str
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bsi") as client:
                return await client.request(
                    method, path, content=content, headers={**self.headers, **headers}
                )

        return asyncio.run(send())

    def put(self, path: str, content: bytes) -> httpx.Response:
        return self.request("PUT", path, content, **{"Content-Type": "application/json"})

    def get(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("GET", path, **(headers or {}))

    def post(self, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.request("POST", path, **(headers or {}))


def answer(response: httpx.Response, signed: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body, without the date; when ``signed`` is False, also without
    what the app's outer response-signing middleware adds (the signature, which makes
    it set the length)."""
    left_out = {"date", "server"} | (set() if signed else {"x-hmac-signature", "content-length"})
    headers = {k: v for k, v in response.headers.items() if k not in left_out}
    return response.status_code, headers, response.content


@pytest.mark.parametrize("path", ["/v1/ddm/tokens", "/v1/tokens"])
def test_an_unchanged_check_in_is_answered_as_the_route_answers_it(
    server: RunningServer, path: str
) -> None:
    device_id, credential = server.enroll()
    device = server.client(credential)
    etag = device.get(path).headers["etag"]
    server.service._groups.drop()  # the route answers from a cold cache, then fills it
    from_route = device.get(path, headers={"If-None-Match": etag})
    assert from_route.status_code == 304
    fast = FastPath(server, credential)
    for held in (etag, etag.strip('"')):  # as an ETag, or the bare token Apple sends
        alone = answer(fast.get(path, headers={"If-None-Match": held}))
        assert alone == answer(from_route, signed=False)
        # Through the whole app (the cache is warm now): counted, signed, the same answer.
        assert answer(device.get(path, headers={"If-None-Match": held})) == answer(from_route)
    # What it does not answer reaches the app: a changed token, no If-None-Match, no or an
    # unknown credential, another device's X-Enrollment-ID, another method or path.
    assert fast.get(path, headers={"If-None-Match": '"stale"'}).status_code == NOT_ANSWERED
    assert fast.get(path).status_code == NOT_ANSWERED
    assert fast.post(path, headers={"If-None-Match": etag}).status_code == NOT_ANSWERED
    assert fast.get("/v1/ddm/declaration-items").status_code == NOT_ANSWERED
    unknown = FastPath(server, "not-a-credential")
    assert unknown.get(path, headers={"If-None-Match": etag}).status_code == NOT_ANSWERED
    anonymous = FastPath(server, None)
    assert anonymous.get(path, headers={"If-None-Match": etag}).status_code == NOT_ANSWERED
    other = FastPath(server, credential, **{"X-Enrollment-ID": "someone-else"})
    assert other.get(path, headers={"If-None-Match": etag}).status_code == NOT_ANSWERED
    assert device_id  # (its own X-Enrollment-ID is answered:)
    own = FastPath(server, credential, **{"X-Enrollment-ID": device_id})
    assert own.get(path, headers={"If-None-Match": etag}).status_code == 304


def test_a_revoked_device_and_a_changed_group_are_left_to_the_route(
    server: RunningServer,
) -> None:
    device_id, credential = server.enroll()
    device = server.client(credential)
    etag = device.get("/v1/ddm/tokens").headers["etag"]
    fast = FastPath(server, credential)
    assert fast.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == 304
    # A declaration assigned to its group: the cached view is dropped, the route answers 200.
    declaration = software_update_settings("bsi-always-on", install_security_update="AlwaysOn")
    admin = server.admin
    assert admin.put("/v1/admin/declarations/bsi-always-on", json=declaration.to_json()).is_success
    assert admin.put("/v1/admin/declarations/bsi-always-on/groups/default").status_code == 204
    assert fast.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == NOT_ANSWERED
    changed = device.get("/v1/ddm/tokens", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    etag = changed.headers["etag"]
    assert fast.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == 304
    # Revoked: never answered 304 again; the route says why.
    assert server.admin.post(f"/v1/admin/devices/{device_id}/revoke").is_success
    assert fast.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == NOT_ANSWERED
    refused = device.get("/v1/ddm/tokens", headers={"If-None-Match": etag})
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]


def test_fast_answers_are_counted_as_check_ins(server: RunningServer) -> None:
    _, credential = server.enroll()
    device = server.client(credential)
    etag = device.get("/v1/ddm/tokens").headers["etag"]

    def unchanged() -> float:
        text = server.reader.get("/metrics").text
        for line in text.splitlines():
            if line.startswith('bsi_checkins_total{result="304"}'):
                return float(line.split()[-1])
        return 0.0

    before = unchanged()
    for _ in range(3):
        assert device.get("/v1/ddm/tokens", headers={"If-None-Match": etag}).status_code == 304
    assert unchanged() == before + 3


def _report(**changes: object) -> bytes:
    """A full report from a Mac, with top-level status items replaced."""
    report = macos_report()
    report["StatusItems"].update(changes)
    return json.dumps(report).encode()


BAD_REPORTS = {
    "not JSON": b"{",
    "not UTF-8": b'{"StatusItems": {"a": "\xff"}}',
    "StatusItems not an object": b'{"StatusItems": 1}',
    "not an object": b"[]",
}
"""Refused whole (400); a status item of the wrong type is kept as a finding instead (200)."""


@pytest.mark.parametrize("path", ["/v1/ddm/status", "/v1/status"])
def test_a_status_report_is_answered_as_the_route_answers_it(
    server: RunningServer, path: str
) -> None:
    device_id, credential = server.enroll()
    device = server.client(credential)
    fast = FastPath(server, credential, status=True)
    # A query string takes a report to the route (the fast path leaves it there).
    wrong_type = _report(device={"operating-system": {"version": 26}})
    codes = []
    for body in [_report(), wrong_type, *BAD_REPORTS.values()]:
        from_route = device.put(f"{path}?via=route", content=body)
        state_after_route = server.service.device_state(device_id)
        alone = fast.put(path, body)
        assert answer(alone, signed=False) == answer(from_route, signed=False), body
        assert server.service.device_state(device_id) == state_after_route
        codes.append(alone.status_code)
    assert codes == [200, 200] + [400] * len(BAD_REPORTS)
    # A new report through the fast path alone is stored as the route stores it.
    changed = _report(softwareupdate={"device-id": "J413AP", "install-state": "downloading"})
    assert fast.put(path, changed).status_code == 200
    state = server.service.device_state(device_id)
    assert state is not None
    assert state.install_state == "downloading"
    # Through the whole app: answered, and signed as every DDM answer is.
    whole = device.put(path, content=_report())
    assert whole.status_code == 200
    assert "x-hmac-signature" in whole.headers


def test_the_status_fast_path_leaves_what_it_cannot_take_to_the_route(
    server: RunningServer,
) -> None:
    device_id, credential = server.enroll()
    body = _report()
    taken = FastPath(server, credential, status=True)
    assert taken.put("/v1/ddm/status", body).status_code == 200
    assert taken.put("/v1/ddm/status?x=1", body).status_code == NOT_ANSWERED
    assert taken.request("POST", "/v1/ddm/status", body).status_code == NOT_ANSWERED
    assert taken.request("GET", "/v1/ddm/status").status_code == NOT_ANSWERED
    for other in (
        FastPath(server, None, status=True),
        FastPath(server, "not-a-credential", status=True),
        FastPath(server, credential, status=True, **{"X-Enrollment-ID": "someone-else"}),
    ):
        assert other.put("/v1/ddm/status", body).status_code == NOT_ANSWERED
    assert server.admin.post(f"/v1/admin/devices/{device_id}/revoke").is_success
    assert taken.put("/v1/ddm/status", body).status_code == NOT_ANSWERED


@pytest.mark.server_settings(status_burst=2, status_per_second=0.01)
def test_the_status_fast_path_refuses_over_the_rate_as_the_route_does(
    server: RunningServer,
) -> None:
    _, credential = server.enroll()
    fast = FastPath(server, credential, status=True)
    assert [fast.put("/v1/ddm/status", _report()).status_code for _ in range(2)] == [200, 200]
    refused = fast.put("/v1/ddm/status", _report())
    from_route = server.client(credential).put("/v1/ddm/status?via=route", content=_report())
    assert refused.status_code == 429
    assert refused.headers["retry-after"]
    assert answer(refused, signed=False) == answer(from_route, signed=False)


def test_the_unchanged_check_in_path_reads_nothing_when_the_rollouts_are_not_in_memory(
    server: RunningServer,
) -> None:
    """The rollouts a device's served view depends on (its Apple wave enforcements) are
    re-read every few seconds and after every decision pass; the event loop must never
    be the one to read them (every request would wait behind that read): the fast path
    leaves the check-in to the route, which reads them in a worker thread."""
    _, credential = server.enroll()
    device = server.client(credential)
    etag = device.get("/v1/ddm/tokens").headers["etag"]
    fast = FastPath(server, credential)
    unchanged = {"If-None-Match": etag}
    assert fast.get("/v1/ddm/tokens", headers=unchanged).status_code == 304
    with sql_statements(server, this_thread=True) as statements:  # the fast path's own
        server.service.rollouts.forget()  # as a decision pass does, or their cache expiring
        assert fast.get("/v1/ddm/tokens", headers=unchanged).status_code == NOT_ANSWERED
    assert statements == []
    # The route reads them (in a worker thread) and answers; then the fast path does again.
    assert device.get("/v1/ddm/tokens", headers=unchanged).status_code == 304
    assert fast.get("/v1/ddm/tokens", headers=unchanged).status_code == 304


@pytest.mark.server_settings(cache_seconds=600)  # nothing expires between two requests
def test_a_catalogue_request_is_answered_as_the_route_answers_it(
    server: RunningServer, shared_data: Path
) -> None:
    """An agent asks for its platform's catalogue at every check-in: with its parts in
    memory the fast path answers as the route does (same status, headers and body, holds
    and retry allowance included) and marks the device seen; anything else it leaves to
    the route."""
    for name in ("gdmf_cached.json", "macos_data_feed.json"):
        body = (shared_data / "sofa" / name).read_bytes()
        assert server.admin.post("/v1/admin/catalog", params={"source": name}, content=body)
    device_id, credential = server.enroll()
    device = server.client(credential)
    assert device.put("/v1/ddm/status", content=_report()).status_code == 200
    window = {"days": ["fri"], "start": "22:00", "end": "04:00", "timezone": "Europe/Berlin"}
    assert server.admin.put("/v1/admin/groups/default/maintenance-window", json=window)
    retry = server.admin.post("/v1/admin/supplements/macOS/25D771280a/allow-retry")
    assert retry.status_code == 201, retry.text
    fast = FastPath(server, credential, catalog=True)
    path = "/v1/ddm/catalog?platform=macOS"
    assert fast.get(path).status_code == NOT_ANSWERED  # not in memory yet: the route reads
    from_route = device.get(path)
    assert from_route.status_code == 200
    assert from_route.json()["device"]["window"] == window
    assert from_route.json()["latest_retry"] == retry.json()["id"]
    server.clock.advance(minutes=5)
    answered = fast.get(path)
    server.service.flush_last_seen()
    seen = server.reader.get(f"/v1/admin/devices/{device_id}").json()["last_seen_at"]
    assert seen.startswith("2026-03-20T12:05")
    assert answer(answered, signed=False) == answer(device.get(path), signed=False)
    assert answered.json() == from_route.json()
    for elsewhere in (
        "/v1/ddm/catalog",  # no platform: the route refuses it
        "/v1/ddm/catalog?platform=mac%4FS",  # to decode
        "/v1/ddm/catalog?platform=macOS&platform=iOS",
        "/v1/ddm/catalog?platform=" + "m" * 65,
    ):
        assert fast.get(elsewhere).status_code == NOT_ANSWERED, elsewhere
    assert FastPath(server, "no-such-credential", catalog=True).get(path).status_code == (
        NOT_ANSWERED
    )


def test_a_long_poll_is_answered_as_the_route_answers_it(server: RunningServer) -> None:
    """Every waiting device holds a long poll and a wake-up answers them all at once:
    with a plain query the fast path holds it and answers as the route does (the route
    is reached here with a query only it reads: a timeout in exponent form); anything
    else it leaves to the route."""
    _, credential = server.enroll()
    device = server.client(credential)
    current = device.get("/v1/ddm/wait", params={"timeout": "1e-3"}).json()["generation"]

    async def fast(queries: list[str]) -> list[httpx.Response]:
        wakeups = Wakeups(server.service.stores.generations, 1.0)
        await wakeups.start()
        app = LongPolls(route_elsewhere, server.service, wakeups)
        headers = {"Authorization": f"Bearer {credential}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bsi", headers=headers
        ) as client:
            return [await client.get("/v1/ddm/wait" + query) for query in queries]

    waited = f"?generation={current}&timeout=0.05"
    older = "?timeout=0.050&generation=0"  # check in at once, unless nothing was ever announced
    answers = asyncio.run(fast([waited, older]))
    assert answers[0].json() == {"generation": current, "check_in": False}
    for answered, on_route in zip(
        answers, [f"?generation={current}&timeout=5e-2", "?generation=0&timeout=5e-2"], strict=True
    ):
        assert answer(answered, signed=False) == answer(
            device.get("/v1/ddm/wait" + on_route), False
        )
    elsewhere = [
        "?generation=-1",
        "?generation=1.5",
        "?generation=0x1",
        "?generation=1&generation=2",
        "?generation=" + "9" * 19,
        "?timeout=0",
        "?timeout=301",
        "?timeout=1e2",
        "?timeout=0.1234567",
        "?generation=1&",
        "?other=1",
    ]
    assert [r.status_code for r in asyncio.run(fast(elsewhere))] == [NOT_ANSWERED] * len(elsewhere)
    refused = device.get("/v1/ddm/wait?generation=1.5")
    assert refused.status_code == 422
    credential = "not-a-credential"
    assert asyncio.run(fast([waited]))[0].status_code == NOT_ANSWERED
