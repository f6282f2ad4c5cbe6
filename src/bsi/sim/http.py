"""A small HTTP/1.1 client for simulated devices: one keep-alive connection per device.

Why not httpx, which the agent itself uses? Because at ten thousand devices
the simulator, not the server, became the bottleneck: measured on two cores,
httpx.AsyncClient spent about 0.3 ms of CPU per request (URL handling,
connection-pool scans, anyio cancel scopes), so a wake-up storm of 10,000
devices (five requests each) cost the simulator 75 s of CPU against the
server's 45 s, and the figures measured the simulator. This client does what
the DDM conversation needs and nothing else — keep-alive, ``Content-Length``
and chunked bodies, a timeout per request, one retry when a reused idle
connection turns out closed — in a few dozen microseconds per request. The
requests themselves (paths, headers, bodies) are the agent's; see
:mod:`bsi.sim.protocol`.

Only plain ``http://`` (the simulator talks to loopback).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from bsi.strict import read_json


class HttpFailed(Exception):
    """The request got no complete response (connection refused, reset, timed out)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body, read by :mod:`bsi.strict`'s rules (:class:`~bsi.errors.InvalidInput`
        naming the fault when it is not strict JSON)."""
        return read_json(self.body, source=f"HTTP {self.status} response body")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Connection:
    """One device's connection to the server, opened on first use and reused."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{base_url!r}: only http://host:port URLs")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base_url = f"http://{self.host}:{self.port}"
        self.timeout = timeout
        self._host_header = f"Host: {self.host}:{self.port}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
    ) -> Response:
        target = f"{path}?{urlencode(params)}" if params else path
        body = b"" if json_body is None else json.dumps(json_body).encode()
        head = [f"{method} {target} HTTP/1.1\r\n".encode(), self._host_header]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}\r\n".encode())
        if json_body is not None:
            head.append(b"Content-Type: application/json\r\n")
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}\r\n".encode())
        head.append(b"\r\n")
        message = b"".join(head) + body
        for attempt in (1, 2):
            reused = self._writer is not None
            received = False
            try:
                async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                    if self._writer is None:
                        self._reader, self._writer = await asyncio.open_connection(
                            self.host, self.port
                        )
                    assert self._reader is not None
                    self._writer.write(message)
                    await self._writer.drain()
                    raw = await self._reader.readuntil(b"\r\n\r\n")
                    received = True
                    return await self._response(method, raw)
            except TimeoutError:
                self.close()
                raise HttpFailed(f"{method} {path}: no answer in time") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                self.close()
                # An idle keep-alive connection the server has just closed: the request
                # was never read, so sending it again on a new connection is safe.
                if reused and not received and attempt == 1:
                    continue
                raise HttpFailed(f"{method} {path}: {error!r}") from error
        raise AssertionError("unreachable")

    async def _response(self, method: str, raw: bytes) -> Response:
        assert self._reader is not None
        lines = raw[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if method == "HEAD" or status in (204, 304) or status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        else:
            body = await self._reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await self._reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
