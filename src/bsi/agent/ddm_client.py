"""The agent's transport for the DDM conversation: httpx, synchronous.

Every request and every reading of an answer is :mod:`bsi.agent.protocol`'s;
this module only moves a :class:`~bsi.agent.protocol.Request` over one
``httpx.Client`` (keep-alive, the bearer credential set by the conversation)
and turns a request that got no answer into
:class:`~bsi.errors.ServerUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from bsi.agent.protocol import Conversation, Enrollment, Exchange, Request, drive, unreachable

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class DdmClient:
    """One device's DDM conversation with ``server_url`` over httpx.

    ``timeout`` (seconds) applies to each request that does not set its own
    (the long poll does).
    """

    def __init__(
        self, server_url: str, credential: str | None = None, *, timeout: float = 30
    ) -> None:
        self.conversation = Conversation(server_url, credential)
        self._http = httpx.Client(base_url=self.conversation.base_url, timeout=timeout)

    @property
    def server_date(self) -> datetime | None:
        """The server's clock (its last ``Date`` header, RFC 9110 6.6.1; 1 s resolution)."""
        return self.conversation.server_date

    def close(self) -> None:
        self._http.close()

    def send(self, request: Request) -> _Reply:
        """One request over the connection; :class:`ServerUnavailable` when unanswered."""
        extra: dict[str, Any] = {}
        if request.timeout is not None:
            extra["timeout"] = request.timeout
        try:
            response = self._http.request(
                request.method,
                request.path,
                params=dict(request.params) if request.params else None,
                headers=dict(request.headers),
                json=request.json,
                **extra,
            )
        except httpx.HTTPError as error:
            raise unreachable(self.conversation.base_url, request, error) from error
        return _Reply(response.status_code, response.headers, response.content)

    def run(self, exchange: Exchange[T]) -> T:
        """Carry out a conversation step (or a whole cycle) over this client."""
        return drive(exchange, self.send)

    def enroll(self, token: str) -> Enrollment:
        return self.run(self.conversation.enroll(token))

    def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        return self.run(self.conversation.wait(generation, timeout))
