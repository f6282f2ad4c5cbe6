"""The simulator's transport for the DDM conversation: asynchronous, many devices per process.

Requests, headers, the 304 rule and the mapping of failures are the agent's
own (:mod:`bsi.agent.protocol`); this module only moves each
:class:`~bsi.agent.protocol.Request` over the device's keep-alive connection
(:class:`bsi.sim.http.Connection`), so ten thousand devices holding the long
poll cost a socket each, not a thread each.
"""

from __future__ import annotations

from typing import TypeVar

from bsi.agent.protocol import (
    Conversation,
    Enrollment,
    Exchange,
    Request,
    drive_async,
    unreachable,
)
from bsi.sim.http import Connection, HttpFailed, Response

T = TypeVar("T")


class DeviceSession:
    """One device's DDM conversation over its connection (no ``credential`` before enrollment)."""

    def __init__(self, connection: Connection, credential: str | None = None) -> None:
        self.connection = connection
        self.conversation = Conversation(connection.base_url, credential)

    async def send(self, request: Request) -> Response:
        """One request; :class:`~bsi.errors.ServerUnavailable` when it got no answer."""
        try:
            return await self.connection.request(
                request.method,
                request.path,
                params=dict(request.params) if request.params else None,
                headers=dict(request.headers),
                json_body=request.json,
                timeout=request.timeout,
            )
        except HttpFailed as error:
            raise unreachable(self.connection.base_url, request, error) from error

    async def run(self, exchange: Exchange[T]) -> T:
        """Carry out a conversation step (or a whole agent cycle) over this connection."""
        return await drive_async(exchange, self.send)

    async def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        """Hold the wake-up long poll; (new generation, whether to check in now)."""
        return await self.run(self.conversation.wait(generation, timeout))


async def enroll(connection: Connection, token: str) -> Enrollment:
    """Spend an enrollment token over ``connection``."""
    session = DeviceSession(connection)
    return await session.run(session.conversation.enroll(token))
