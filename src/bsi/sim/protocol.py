"""The device side of the DDM protocol, asynchronous, for many devices in one process.

The same requests, headers and checks as the agent's own
:class:`bsi.agent.ddm_client.DdmClient` — enrollment, the sync-token check-in
with ``If-None-Match`` (an unchanged check-in is a 304 with no body),
declaration items and declarations validated against Apple's schema, the
platform's catalogue, status reports, the wake-up long poll — and the same
mapping of failures: no answer or a 5xx is :class:`ServerUnavailable` (the
agent backs off), 401 is :class:`~bsi.errors.Unauthorized`, another 4xx is
:class:`ServerRefused` with the server's message.

Each device has one keep-alive connection (:class:`bsi.sim.http.Connection`),
so ten thousand devices holding the long poll cost a socket each, not a
thread each.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from bsi.agent.ddm_client import ServerRefused, ServerUnavailable
from bsi.domain.catalog import Catalog
from bsi.domain.declarations import Declaration, validate_declaration
from bsi.errors import Unauthorized
from bsi.feeds import parse_bsi_catalog
from bsi.sim.http import Connection, HttpFailed, Response

WAIT_GRACE_SECONDS = 30.0
"""How much longer than the long poll's own timeout the device waits for its answer."""


class _CatalogCache:
    """Parsed catalogues by response body: a thousand devices fetching the same bytes
    parse them once. Same bytes, same catalogue, so every decision is unchanged."""

    def __init__(self, size: int = 16) -> None:
        self._parsed: OrderedDict[bytes, Catalog] = OrderedDict()
        self._size = size

    def parse(self, body: bytes, source: str) -> Catalog:
        found = self._parsed.get(body)
        if found is None:
            found = parse_bsi_catalog(json.loads(body), source=source)
            self._parsed[body] = found
            if len(self._parsed) > self._size:
                self._parsed.popitem(last=False)
        else:
            self._parsed.move_to_end(body)
        return found


CATALOGS = _CatalogCache()


async def request(connection: Connection, method: str, path: str, **kwargs: Any) -> Response:
    """One request, with the agent's mapping of failures to errors."""
    try:
        response = await connection.request(method, path, **kwargs)
    except HttpFailed as error:
        raise ServerUnavailable(f"cannot reach {connection.base_url}: {error}") from error
    if response.status >= 500:
        raise ServerUnavailable(f"{method} {path}: server error {response.status}")
    if response.status == 401:
        raise Unauthorized(f"{method} {path}: {_message(response)}")
    if response.status >= 400:
        raise ServerRefused(f"{method} {path}: {_message(response)}")
    return response


@dataclass(frozen=True, slots=True)
class Enrollment:
    device_id: str
    credential: str


async def enroll(connection: Connection, token: str) -> Enrollment:
    body = (await request(connection, "POST", "/v1/enroll", json_body={"token": token})).json()
    return Enrollment(str(body["device_id"]), str(body["credential"]))


class DeviceSession:
    """One enrolled device's DDM conversation over its connection."""

    def __init__(self, connection: Connection, credential: str) -> None:
        self.connection = connection
        self._auth = {"Authorization": f"Bearer {credential}"}

    async def _get(self, path: str, **kwargs: Any) -> Response:
        return await request(self.connection, "GET", path, headers=self._auth, **kwargs)

    async def declarations_token(self, known: str | None) -> str | None:
        """The current sync token, or None when it is still ``known`` (a 304)."""
        headers = dict(self._auth)
        if known:
            headers["If-None-Match"] = known
        response = await request(self.connection, "GET", "/v1/ddm/tokens", headers=headers)
        if response.status == 304:
            return None
        token: str = response.json()["SyncTokens"]["DeclarationsToken"]
        return token

    async def declarations(self) -> list[Declaration]:
        """Every configuration the server serves this device, validated."""
        items = (await self._get("/v1/ddm/declaration-items")).json()
        found = []
        for item in items["Declarations"]["Configurations"]:
            body = await self._get(f"/v1/ddm/declaration/configuration/{item['Identifier']}")
            found.append(validate_declaration(body.json()))
        return found

    async def catalog(self, platform: str) -> Catalog:
        response = await self._get("/v1/ddm/catalog", params={"platform": platform})
        return CATALOGS.parse(response.body, f"{self.connection.base_url} catalogue")

    async def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        """Hold the wake-up long poll; (new generation, whether to check in now)."""
        response = await self._get(
            "/v1/ddm/wait",
            params={"generation": generation, "timeout": max(round(timeout, 3), 0.001)},
            timeout=timeout + WAIT_GRACE_SECONDS,
        )
        body = response.json()
        return int(body["generation"]), bool(body["check_in"])

    async def report(self, report: dict[str, Any]) -> None:
        await request(
            self.connection, "PUT", "/v1/ddm/status", headers=self._auth, json_body=report
        )


def _message(response: Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)
