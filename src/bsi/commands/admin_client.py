"""The HTTP side of ``bsi admin``: where the server is, who we are, and what it answered.

``bsi admin`` is a client of the admin API (``/v1/admin``), nothing more: it
holds no database and no rule of its own, so it works against any bsi server
the key is valid for, however that server is split internally.

Where the server and key come from, first found wins: ``--server`` /
``--api-key``; the environment (``BSI_SERVER``, ``BSI_API_KEY``); the file
``bsi admin login`` writes (``$XDG_CONFIG_HOME/bsi/admin.json``, mode 0600).

Every failure is one of :mod:`bsi.errors` carrying the server's own
``message`` and ``hint``, and maps to one exit code (:func:`exit_code_for`):

====  ==========================================================================
code  meaning
====  ==========================================================================
0     done
1     the server refused the request (4xx other than 401/403); nothing changed
2     bad usage: a wrong argument, no server configured, an unreadable file
3     cannot reach a working server (refused, timeout, 5xx, not a bsi answer)
      or the key is unknown, revoked or read-only (401/403)
====  ==========================================================================
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bsi import durable
from bsi.errors import (
    BsiError,
    Forbidden,
    InvalidInput,
    ServerRefused,
    ServerUnavailable,
    Unauthorized,
)
from bsi.server.paths import ADMIN_PREFIX
from bsi.strict import read_json

SERVER_ENV = "BSI_SERVER"
API_KEY_ENV = "BSI_API_KEY"
CONFIG_NAME = "admin.json"
TIMEOUT_SECONDS = 60.0

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def exit_code_for(error: BsiError) -> int:
    """The exit code a script sees for ``error`` (table in the module docstring)."""
    if isinstance(error, Unauthorized | Forbidden | ServerUnavailable):
        return EXIT_UNREACHABLE
    if isinstance(error, ServerRefused):
        return EXIT_REFUSED
    return EXIT_USAGE


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/bsi/admin.json`` (XDG Base Directory spec; default ``~/.config``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bsi" / CONFIG_NAME


@dataclass(frozen=True, slots=True)
class Connection:
    """A server's base URL (no trailing slash) and an API key of it."""

    server: str
    api_key: str


def check_server_url(server: str) -> str:
    """``server`` without its trailing slash; :class:`InvalidInput` when not an http(s) URL."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(
            f"server {server!r} is not an http(s) URL", hint="e.g. --server http://localhost:8080"
        )
    return server.rstrip("/")


def read_config(path: Path) -> dict[str, str]:
    """The login file's ``server`` and ``api_key``; ``{}`` when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    document = read_json(raw, source=str(path))
    if not isinstance(document, dict) or not all(
        isinstance(document.get(k), str) for k in ("server", "api_key")
    ):
        raise InvalidInput(
            f"{path} is not a bsi admin login (an object with 'server' and 'api_key')",
            hint="run 'bsi admin login' again",
        )
    return {"server": document["server"], "api_key": document["api_key"]}


def write_config(path: Path, connection: Connection) -> None:
    """Write the login file atomically, readable by its owner only (it holds a key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"server": connection.server, "api_key": connection.api_key}
    durable.write_atomic(path, (json.dumps(body, indent=2) + "\n").encode(), mode=0o600)


def resolve(server: str | None, api_key: str | None) -> Connection:
    """Flags (or their environment variables, already applied by the CLI), then the login file."""
    path = config_path()
    saved = read_config(path) if not (server and api_key) else {}
    server = server or saved.get("server")
    api_key = api_key or saved.get("api_key")
    if not server:
        raise InvalidInput(
            "no bsi server given",
            hint=f"pass --server URL, set {SERVER_ENV}, or run 'bsi admin login'",
        )
    if not api_key:
        raise InvalidInput(
            "no API key given",
            hint=f"pass --api-key KEY, set {API_KEY_ENV}, or run 'bsi admin login' "
            "(the first admin key of 'bsi serve' is in <data-dir>/admin-api-key)",
        )
    return Connection(check_server_url(server), api_key)


class AdminClient:
    """Admin API calls; each returns the decoded JSON body, or ``None`` for 204."""

    def __init__(self, connection: Connection, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.connection = connection
        self._http = httpx.Client(
            base_url=connection.server + ADMIN_PREFIX,
            headers={"Authorization": f"Bearer {connection.api_key}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, json=body, params=params)

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        """One request; raises the :mod:`bsi.errors` class its answer maps to."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"content-type": content_type} if content_type else {}
        try:
            response = self._http.request(
                method, path, params=query, json=json, content=content, headers=headers
            )
        except httpx.HTTPError as error:
            raise ServerUnavailable(
                f"cannot reach {self.connection.server}: {error or type(error).__name__}",
                hint="is 'bsi serve' running there? check --server / BSI_SERVER",
            ) from None
        asked = f"{method} {response.request.url.path}"  # the path as requested
        if response.status_code == 204:
            return None
        if response.status_code < 400:
            return read_json(
                response.content, source=f"{asked}: the answer", error=ServerUnavailable
            )
        kind, message, hint = _refusal(response)
        text = f"{asked}: {message}"
        if kind is None and response.status_code in (404, 405):  # not bsi's answer
            raise ServerRefused(
                f"{asked}: HTTP {response.status_code}: {self.connection.server} has no such "
                "admin endpoint",
                hint="--server / BSI_SERVER is the server's base URL, with no path, e.g. "
                "http://127.0.0.1:8080",
            )
        if response.status_code == 401:
            raise Unauthorized(
                text, hint=hint or "check --api-key / BSI_API_KEY, or run 'bsi admin login'"
            )
        if response.status_code == 403 and kind == Forbidden.__name__:  # the key's role
            raise Forbidden(text, hint=hint or "this needs an admin key, not a read-only one")
        if response.status_code >= 500:
            raise ServerUnavailable(f"{text} (HTTP {response.status_code})", hint=hint)
        raise ServerRefused(text, hint=hint)  # what was asked is refused (403s of a device)


def _refusal(response: httpx.Response) -> tuple[str | None, str, str | None]:
    """The server's ``error`` (its class), ``message`` and ``hint`` (bsi's error body);
    for another body (not bsi's), None and the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200] or f"HTTP {response.status_code}", None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        kind, hint = body.get("error"), body.get("hint")
        return (
            kind if isinstance(kind, str) else None,
            body["message"],
            hint if isinstance(hint, str) else None,
        )
    return None, str(body)[:200], None
