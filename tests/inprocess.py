"""The real app answered in this process, without a socket: for tests about what the app
does, not about HTTP on the wire.

:class:`InProcessApp` runs the ASGI app on an event loop of its own in a thread, as
uvicorn would: the lifespan starts first (so the app's background tasks — the
repository watcher, last-seen flushes, revocation polls — run and long polls can be
woken) and ends on :meth:`~InProcessApp.stop`. It is itself an ``httpx`` transport
that sync clients use instead of a connection: each request is handed to
``httpx.ASGITransport`` on that loop, so requests from several threads are served
concurrently, and the client's read timeout still applies.

What it cannot show — HTTP parsing, slow or huge bodies on a socket, several server
processes, a client in another process — stays with the tests that start uvicorn or
``bsi serve`` on a port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx

#: The peer address requests appear to come from (loopback, as for a real local client).
LOOPBACK_CLIENT = ("127.0.0.1", 50000)

_ASGI = {"version": "3.0", "spec_version": "2.0"}


class InProcessApp(httpx.BaseTransport):
    """An ASGI app served on its own event loop thread, and the transport that reaches it.

    Closing a client that uses it leaves the app running; :meth:`stop` ends it.
    """

    def __init__(self, app: Any, *, client: tuple[str, int] = LOOPBACK_CLIENT) -> None:
        self._asgi = httpx.ASGITransport(app, raise_app_exceptions=False, client=client)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="in-process app", daemon=True)

    def start(self, timeout: float = 30) -> InProcessApp:
        """Run the lifespan's startup; raises what the app raised there."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the app's lifespan did not start within {timeout} s")
        if self._failure is not None:
            self._thread.join(timeout)
            raise RuntimeError("the app's lifespan startup failed") from self._failure
        return self

    def stop(self, timeout: float = 30) -> None:
        """Run the lifespan's shutdown (requests still waiting are cancelled)."""
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._failure is not None:
            raise RuntimeError("the app's lifespan shutdown failed") from self._failure

    # --- the loop thread ------------------------------------------------------------

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as error:  # reported by start() or stop()
            self._failure = error
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": _ASGI, "state": {}}
        lifespan = asyncio.create_task(self._app(scope, inbox.get, outbox.put))

        async def step(message: str) -> None:
            await inbox.put({"type": f"lifespan.{message}"})
            reply = asyncio.create_task(outbox.get())
            await asyncio.wait({reply, lifespan}, return_when=asyncio.FIRST_COMPLETED)
            if not reply.done():
                reply.cancel()
                lifespan.result()  # the app's own exception, if it raised one
                raise RuntimeError(f"the app ended its lifespan during {message}")
            answer = reply.result()
            if answer["type"] != f"lifespan.{message}.complete":
                raise RuntimeError(f"lifespan {message}: {answer.get('message', answer['type'])}")

        await step("startup")
        self._ready.set()
        await self._stop.wait()
        await step("shutdown")
        await lifespan

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        response = await self._asgi.handle_async_request(request)
        body = b"".join([chunk async for chunk in response.stream])  # type: ignore[union-attr]
        return httpx.Response(
            response.status_code, headers=response.headers.raw, stream=httpx.ByteStream(body)
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self._loop is None or not self._thread.is_alive():
            raise httpx.ConnectError("the in-process app is not running", request=request)
        if not isinstance(request.stream, httpx.AsyncByteStream):
            request.stream = _Chunks(request.stream)  # chunk by chunk, as sent
        timeout = request.extensions.get("timeout", {}).get("read")
        future = asyncio.run_coroutine_threadsafe(self._handle(request), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise httpx.ReadTimeout("no answer within the read timeout", request=request) from None


class _Chunks(httpx.AsyncByteStream):
    """A sync request body read chunk by chunk on the app's loop (a streamed upload
    reaches the app in its pieces, as over a connection)."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._stream:
            yield chunk
