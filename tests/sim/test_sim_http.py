"""The simulator's small HTTP/1.1 client against a scripted server on loopback.

It replaces httpx for ten thousand simulated devices, so it must get the
parts of HTTP the DDM conversation meets right: bodies by length and by
chunks, a 304 without a body, keep-alive reuse, a server that closes an idle
connection (retried once, on a new connection), and timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from bsi.errors import ServerUnavailable, Unauthorized
from bsi.sim.http import Connection, HttpFailed
from bsi.sim.protocol import DeviceSession
from bsi.sim.server import Admin, ServerFailed

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def test_bodies_by_length_and_by_chunks_and_a_304_on_one_connection() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        answers = [
            b'HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n{"a":1}',
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b'3\r\n{"b\r\n4\r\n":2}\r\n0\r\n\r\n',
            b'HTTP/1.1 304 Not Modified\r\netag: "t"\r\n\r\n',
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ]
        for answer in answers:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            connection = Connection(url)
            assert (await connection.request("GET", "/one", params={"x": "1 2"})).json() == {"a": 1}
            assert (await connection.request("GET", "/two")).json() == {"b": 2}
            not_modified = await connection.request(
                "GET", "/three", headers={"If-None-Match": '"t"'}
            )
            assert (not_modified.status, not_modified.body) == (304, b"")
            put = await connection.request("PUT", "/four", json_body={"k": [1]})
            assert put.text == "ok"
            connection.close()

    asyncio.run(scenario())
    assert connections == 1
    assert seen[0].startswith(b"GET /one?x=1+2 HTTP/1.1\r\n")
    assert b'If-None-Match: "t"\r\n' in seen[2]
    assert seen[3].endswith(b'\r\n\r\n{"k": [1]}')
    assert b"Content-Type: application/json\r\n" in seen[3]


def test_an_idle_connection_the_server_closed_is_retried_on_a_new_one() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # as a keep-alive timeout would, right after answering

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            connection = Connection(url)
            assert (await connection.request("GET", "/")).text == "ok"
            await asyncio.sleep(0.05)
            assert (await connection.request("GET", "/")).text == "ok"
            connection.close()

    asyncio.run(scenario())
    assert connections == 2


def test_no_server_and_no_answer_are_failures() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def scenario() -> None:
        server, url = await serve(silent)
        async with server:
            with pytest.raises(HttpFailed, match="no answer in time"):
                await Connection(url).request("GET", "/", timeout=0.2)
        with pytest.raises(HttpFailed):
            await Connection(url).request("GET", "/")

    asyncio.run(scenario())


def test_only_plain_http_urls() -> None:
    with pytest.raises(ValueError, match="only http"):
        Connection("https://127.0.0.1:1")


def test_the_device_session_drives_the_agents_conversation_over_this_client() -> None:
    """The simulator's transport: the agent's requests on the wire, its reading of the
    answers (a 304 is "unchanged"), and its failure mapping (no answer, 5xx, 401)."""
    heads: list[bytes] = []
    answers = [
        b"HTTP/1.1 304 Not Modified\r\ndate: Sun, 29 Nov 2026 23:00:00 GMT\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        b'HTTP/1.1 401 Unauthorized\r\ncontent-length: 19\r\n\r\n{"message":"gone!"}',
    ]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            head, _ = await read_request(reader)
            heads.append(head)
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            session = DeviceSession(Connection(url), "secret")
            conversation = session.conversation
            assert await session.run(conversation.declarations_token("t1")) is None
            assert conversation.server_date == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
            with pytest.raises(ServerUnavailable, match="server error 503"):
                await session.run(conversation.catalog("debian"))
            with pytest.raises(Unauthorized, match="gone!"):
                await session.run(conversation.report({}))
        closed = DeviceSession(Connection(url), "secret")
        with pytest.raises(ServerUnavailable, match="GET /v1/ddm/tokens: cannot reach"):
            await closed.run(closed.conversation.declarations_token(None))

    asyncio.run(scenario())
    first = heads[0].decode()
    assert first.startswith("GET /v1/ddm/tokens HTTP/1.1\r\n")
    assert "Authorization: Bearer secret\r\n" in first
    assert "If-None-Match: t1\r\n" in first
    assert heads[1].startswith(b"GET /v1/ddm/catalog?platform=debian HTTP/1.1")
    assert heads[2].startswith(b"PUT /v1/ddm/status HTTP/1.1")


def test_an_admin_answer_that_is_not_strict_json_is_a_clear_error() -> None:
    """The simulator reads the admin API's answers by bsi.strict's rules too."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{"a": NaN }')
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, url = await serve(handler)
        async with server:
            admin = Admin(url, "key")
            try:
                with pytest.raises(ServerFailed, match=r"GET /v1/admin/x: .*NaN is not a JSON"):
                    await admin.call("GET", "/v1/admin/x")
            finally:
                await admin.aclose()

    asyncio.run(scenario())
