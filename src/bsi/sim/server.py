"""The server the simulator talks to: ``bsi serve`` in a child process, and its admin API.

The simulator starts the real server exactly as an operator would
(``python -m bsi serve --data-dir … --tuf-repo-dir … --tuf-keys-dir …``, the
embedded SQLite default) on a free 127.0.0.1 port. A separate process keeps
the server's CPU time apart from the simulated devices' (the benchmark
reports it), gives it its own interpreter lock, and lets ``bsi demo`` leave it
running exactly as it would run in production.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx

from bsi.errors import BsiError
from bsi.server.paths import SYNC_REPOSITORY_PATH
from bsi.strict import read_json

ADMIN_KEY_FILE = "admin-api-key"  # as bsi.server.app writes it; not imported to stay light
LOOPBACK = "127.0.0.1"


class ServerFailed(BsiError):
    """The server did not start, or an admin request failed."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """``bsi serve`` on loopback; ``stop()`` ends it with SIGINT, as Ctrl-C would."""

    data_dir: Path
    tuf_repo_dir: Path | None = None
    tuf_keys_dir: Path | None = None
    port: int = 0
    options: tuple[str, ...] = ()
    """More ``bsi serve`` options (``--rollout-tick-seconds 1``)."""
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / ADMIN_KEY_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "bsi",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        if self.tuf_repo_dir is not None:
            command += ["--tuf-repo-dir", str(self.tuf_repo_dir)]
        if self.tuf_keys_dir is not None:
            command += ["--tuf-keys-dir", str(self.tuf_keys_dir)]
        command += self.options
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BSI_")}
        self._log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=environment
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerFailed(
                    f"bsi serve exited with status {self.process.returncode}",
                    hint=f"see {self.log_file}: {self._tail()}",
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.stop()
                raise ServerFailed(f"bsi serve did not answer on {self.url} in {timeout:g} s")
            time.sleep(0.1)

    def admin_key(self) -> str:
        return self.admin_key_file.read_text().strip()

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail(self, lines: int = 5) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])


class Admin:
    """The admin API, as the simulator uses it (async, one client)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ServerFailed(f"{method} {path}: {error!r}") from error
        if response.status_code >= 400:
            raise ServerFailed(f"{method} {path}: {response.status_code} {response.text[:300]}")
        if response.status_code == 204 or not response.content:
            return None
        return read_json(response.content, source=f"{method} {path}", error=ServerFailed)

    async def ensure_group(self, name: str) -> None:
        await self.call("POST", "/v1/admin/groups", json={"name": name})

    async def put_declaration(self, declaration: dict[str, Any], group: str) -> None:
        identifier = declaration["Identifier"]
        await self.call("PUT", f"/v1/admin/declarations/{identifier}", json=declaration)
        await self.call("PUT", f"/v1/admin/declarations/{identifier}/groups/{group}")

    async def enrollment_token(self, group: str, uses: int) -> str:
        body = await self.call(
            "POST",
            "/v1/admin/enrollment-tokens",
            json={"group": group, "max_uses": max(uses, 1), "expires_in_hours": 24},
        )
        return str(body["token"])

    async def sync_repository(self) -> int:
        body = await self.call("POST", SYNC_REPOSITORY_PATH)
        return int(body["supplements"])

    async def device(self, device_id: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.call("GET", f"/v1/admin/devices/{device_id}")
        return body

    async def devices(self, group: str | None = None) -> list[dict[str, Any]]:
        """Every device (of ``group``), following the list's cursor."""
        found: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 10_000}
            if group:
                params["group"] = group
            if after:
                params["after"] = after
            body = await self.call("GET", "/v1/admin/devices", params=params)
            found += body["devices"]
            after = body.get("next")
            if not after:
                return found

    async def events(self, kinds: tuple[str, ...], build: str) -> list[dict[str, Any]]:
        """Every event of ``kinds`` about supplement ``build``, oldest first (all pages)."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            params: dict[str, Any] = {"kind": list(kinds), "supplement": build, "limit": 1000}
            body = await self.call("GET", "/v1/admin/events", params={**params, "after": after})
            found += body["events"]
            if body.get("next") is None:
                return found
            after = int(body["next"])

    async def patch_windows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.call(
            "GET", "/v1/admin/patch-windows", params={"per_device": "true"}
        )
        return rows

    async def supplement_compliance(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.call("GET", "/v1/admin/compliance/supplements")
        return rows

    async def cve_compliance(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.call("GET", "/v1/admin/compliance/cves")
        return rows


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
