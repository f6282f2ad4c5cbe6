"""The agent's side of the DDM protocol, over httpx.

Enrollment, the sync-token check-in (``If-None-Match``, so an unchanged
check-in is a 304 with no body), declarations, the platform's catalogue and
status reports. Transport failures become :class:`ServerUnavailable`, which
the daemon answers with backoff; refusals become the server's own message.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bsi.domain.catalog import Catalog
from bsi.domain.declarations import Declaration, validate_declaration
from bsi.errors import BsiError, Unauthorized
from bsi.feeds import parse_bsi_catalog


class ServerUnavailable(BsiError):
    """The server could not be reached or answered 5xx; try again later."""


class ServerRefused(BsiError):
    """The server answered 4xx; its message says why."""


@dataclass(frozen=True, slots=True)
class Enrollment:
    device_id: str
    credential: str


class DdmClient:
    def __init__(
        self, server_url: str, credential: str | None = None, *, timeout: float = 30
    ) -> None:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        self._http = httpx.Client(base_url=server_url.rstrip("/"), headers=headers, timeout=timeout)
        self.server_date: datetime | None = None
        """The server's clock (its last ``Date`` header, RFC 9110 5.6.7; 1 s resolution)."""

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServerUnavailable(f"cannot reach {self._http.base_url}: {error}") from error
        with contextlib.suppress(TypeError, ValueError):
            self.server_date = parsedate_to_datetime(response.headers.get("date", ""))
        if response.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: server error {response.status_code}")
        if response.status_code == 401:
            raise Unauthorized(f"{method} {path}: {_message(response)}")
        if response.status_code >= 400:
            raise ServerRefused(f"{method} {path}: {_message(response)}")
        return response

    def enroll(self, token: str) -> Enrollment:
        body = self._request("POST", "/v1/enroll", json={"token": token}).json()
        return Enrollment(body["device_id"], body["credential"])

    def declarations_token(self, known: str | None) -> str | None:
        """The current sync token, or None when it is still ``known``."""
        headers = {"If-None-Match": known} if known else {}
        response = self._request("GET", "/v1/ddm/tokens", headers=headers)
        if response.status_code == 304:
            return None
        token: str = response.json()["SyncTokens"]["DeclarationsToken"]
        return token

    def declarations(self) -> list[Declaration]:
        """Every configuration the server serves this device, validated."""
        items = self._request("GET", "/v1/ddm/declaration-items").json()
        found = []
        for item in items["Declarations"]["Configurations"]:
            body = self._request("GET", f"/v1/ddm/declaration/configuration/{item['Identifier']}")
            found.append(validate_declaration(body.json()))
        return found

    def catalog(self, platform: str) -> Catalog:
        body = self._request("GET", "/v1/ddm/catalog", params={"platform": platform}).json()
        return parse_bsi_catalog(body, source=f"{self._http.base_url} catalogue")

    def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        """Hold a long poll; (new generation, whether to check in now)."""
        response = self._request(
            "GET",
            "/v1/ddm/wait",
            params={"generation": generation, "timeout": timeout},
            timeout=timeout + 30,
        )
        body = response.json()
        return int(body["generation"]), bool(body["check_in"])

    def retries(self, after: int) -> list[tuple[int, str]]:
        """``(id, supplemental build)`` of each retry the server allowed since id ``after``.

        An administrator allows a failed or removed supplement again
        (``POST /v1/admin/supplements/{platform}/{build}/allow-retry``), for
        every device or one; ids only grow, so the agent keeps the highest
        one it has seen.
        """
        body = self._request("GET", "/v1/ddm/retries", params={"after": after}).json()
        return [(int(item["id"]), str(item["build"])) for item in body["retries"]]

    def report(self, report: dict[str, Any]) -> None:
        self._request("PUT", "/v1/ddm/status", json=report)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("message", body)) if isinstance(body, dict) else str(body)
