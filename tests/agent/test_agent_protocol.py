"""The sans-IO DDM conversation: requests built and replies read, with no network.

Each test drives an exchange by hand (or with :func:`drive` over a scripted
transport) and checks the exact request and the reading of each answer: the
304 rule, the failure mapping, enrollment, declarations, the catalogue, the
long poll, retries and the server's clock. The real transports are tested
end to end in tests/agent (httpx) and tests/sim (the simulator's client).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest

from bsi.agent.protocol import (
    Conversation,
    Enrollment,
    Exchange,
    Request,
    drive,
    drive_async,
    unreachable,
)
from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.declarations import software_update_settings
from bsi.domain.policy import InstallSecurityUpdate
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion, SupplementVersion
from bsi.errors import (
    BsiError,
    InvalidDeclaration,
    ServerRefused,
    ServerUnavailable,
    Unauthorized,
)
from bsi.feeds.bsi_catalog import dump_bsi_catalog

SERVER = "http://bsi.test:8443/"


@dataclass(frozen=True)
class Canned:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def answer(status: int, body: Any = None, **headers: str) -> Canned:
    return Canned(status, b"" if body is None else json.dumps(body).encode(), headers)


class Script:
    """A transport that answers each request with the next canned reply, and records it."""

    def __init__(self, *replies: Canned | BsiError) -> None:
        self.replies = list(replies)
        self.sent: list[Request] = []

    def __call__(self, request: Request) -> Canned:
        self.sent.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, BsiError):
            raise reply
        return reply


def run(exchange: Exchange[Any], *replies: Canned | BsiError) -> tuple[Any, list[Request]]:
    script = Script(*replies)
    result = drive(exchange, script)
    assert not script.replies, "the exchange stopped before using every reply"
    return result, script.sent


def test_requests_carry_the_credential_and_nothing_before_enrollment() -> None:
    _, sent = run(Conversation(SERVER, "secret").report({"StatusItems": {}}), answer(200, {}))
    assert sent == [
        Request(
            "PUT", "/v1/ddm/status", None, {"Authorization": "Bearer secret"}, {"StatusItems": {}}
        )
    ]
    enrollment, sent = run(
        Conversation(SERVER).enroll("tok"), answer(200, {"device_id": "d1", "credential": "c"})
    )
    assert enrollment == Enrollment("d1", "c")
    assert sent == [Request("POST", "/v1/enroll", None, {}, {"token": "tok"})]


def test_304_means_the_declarations_did_not_change() -> None:
    conversation = Conversation(SERVER, "c")
    token, sent = run(conversation.declarations_token("t1"), Canned(304))
    assert token is None
    assert sent[0].headers["If-None-Match"] == "t1"
    token, sent = run(
        conversation.declarations_token(None),
        answer(200, {"SyncTokens": {"DeclarationsToken": "t2"}}),
    )
    assert token == "t2"
    assert "If-None-Match" not in sent[0].headers  # first check-in: always the full answer


@pytest.mark.parametrize(
    ("status", "error", "words"),
    [
        (500, ServerUnavailable, "server error 500"),
        (503, ServerUnavailable, "server error 503"),
        (401, Unauthorized, "credential revoked"),
        (403, ServerRefused, "credential revoked"),
        (429, ServerRefused, "credential revoked"),
    ],
)
def test_failures_map_into_the_error_hierarchy(
    status: int, error: type[BsiError], words: str
) -> None:
    with pytest.raises(error, match=words) as raised:
        run(
            Conversation(SERVER, "c").catalog("debian"),
            answer(status, {"message": "credential revoked"}),
        )
    assert "GET /v1/ddm/catalog" in str(raised.value)


def test_a_refusal_without_json_quotes_the_start_of_the_body() -> None:
    with pytest.raises(ServerRefused, match="<html>nope"):
        run(Conversation(SERVER, "c").retries(0), Canned(404, b"<html>nope" + b"x" * 500))


@pytest.mark.parametrize(
    "reply",
    [
        Canned(200, b"<html>proxy login</html>"),
        answer(200, {"SyncTokens": {}}),
        answer(200, ["not", "an", "object"]),
    ],
)
def test_an_answer_of_the_wrong_shape_is_a_server_fault_not_a_crash(reply: Canned) -> None:
    with pytest.raises(ServerUnavailable, match="GET /v1/ddm/tokens"):
        run(Conversation(SERVER, "c").declarations_token(None), reply)


def test_declarations_fetches_each_item_and_validates_it() -> None:
    declaration = software_update_settings(
        "policy.one", install_security_update=InstallSecurityUpdate.ALWAYS_ON
    ).to_json()
    items = {"Declarations": {"Configurations": [{"Identifier": "policy.one"}]}}
    found, sent = run(
        Conversation(SERVER, "c").declarations(), answer(200, items), answer(200, declaration)
    )
    assert [d.to_json() for d in found] == [declaration]
    assert [r.path for r in sent] == [
        "/v1/ddm/declaration-items",
        "/v1/ddm/declaration/configuration/policy.one",
    ]
    broken = dict(declaration, Type=7)
    with pytest.raises(InvalidDeclaration):
        run(Conversation(SERVER, "c").declarations(), answer(200, items), answer(200, broken))


def test_catalog_is_parsed_strictly_and_named_after_the_server() -> None:
    supplement = Supplement(
        platform="debian",
        version=SupplementVersion(ProductVersion(12, 5), ExtraVersion("a")),
        build=Build.parse("12A100a"),
        prerequisite=Prerequisite.of_build(Build.parse("12A100")),
        posted=date(2026, 11, 20),
    )
    document = dump_bsi_catalog(Catalog(supplements=(supplement,)))
    catalog, sent = run(Conversation(SERVER, "c").catalog("debian"), answer(200, document))
    assert catalog.supplements == (supplement,)
    assert sent[0].params == {"platform": "debian"}
    with pytest.raises(BsiError, match=re.escape("http://bsi.test:8443 catalogue")):
        run(Conversation(SERVER, "c").catalog("debian"), answer(200, {"format": "other/9"}))


def test_long_poll_asks_for_its_timeout_and_waits_longer_for_the_answer() -> None:
    result, sent = run(
        Conversation(SERVER, "c").wait(4, 12.34567), answer(200, {"generation": 5, "check_in": 1})
    )
    assert result == (5, True)
    assert sent[0].params == {"generation": 4, "timeout": 12.346}
    assert sent[0].timeout == pytest.approx(42.34567)
    _, sent = run(
        Conversation(SERVER, "c").wait(0, 0), answer(200, {"generation": 0, "check_in": False})
    )
    assert sent[0].params == {"generation": 0, "timeout": 0.001}  # the server refuses 0


def test_the_catalogue_names_the_newest_retry_allowance_or_nothing() -> None:
    """``latest_retry``: an allowance id, absent from an older server (``None``: the agent
    asks every cycle), anything else a feed error naming the server."""
    document: dict[str, Any] = dump_bsi_catalog(Catalog())
    found, _ = run(Conversation(SERVER, "c").device_catalog("debian"), answer(200, document))
    assert found.latest_retry is None
    document["latest_retry"] = 7
    found, _ = run(Conversation(SERVER, "c").device_catalog("debian"), answer(200, document))
    assert found.latest_retry == 7
    for bad in (-1, "7", True, 1.5):
        document["latest_retry"] = bad
        with pytest.raises(BsiError, match="latest_retry"):
            run(Conversation(SERVER, "c").device_catalog("debian"), answer(200, document))


def test_retries_are_read_as_ids_and_builds() -> None:
    body = {"retries": [{"id": 3, "build": "12A100a"}, {"id": 9, "build": "12A100b"}]}
    result, sent = run(Conversation(SERVER, "c").retries(2), answer(200, body))
    assert result == [(3, "12A100a"), (9, "12A100b")]
    assert sent[0].params == {"after": 2}


def test_the_server_clock_is_kept_from_every_reply_that_has_one() -> None:
    conversation = Conversation(SERVER, "c")
    run(conversation.report({}), answer(200, {}, date="Sun, 29 Nov 2026 23:00:00 GMT"))
    assert conversation.server_date == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    run(conversation.report({}), answer(200, {}, date="not a date"))
    assert conversation.server_date == datetime(2026, 11, 29, 23, 0, tzinfo=UTC)


def test_a_transport_failure_is_raised_inside_the_exchange() -> None:
    """So an exchange (a whole cycle) can handle it where it sent the request."""
    seen: list[str] = []

    def cycle() -> Exchange[str]:
        try:
            yield from Conversation(SERVER, "c").report({})
        except ServerUnavailable as error:
            seen.append(str(error))
            return "handled"
        return "sent"

    request = Request("PUT", "/v1/ddm/status")
    failure = unreachable("http://bsi.test:8443", request, OSError("connection refused"))
    result, _ = run(cycle(), failure)
    assert result == "handled"
    assert seen == ["PUT /v1/ddm/status: cannot reach http://bsi.test:8443: connection refused"]


def test_the_async_driver_runs_the_same_exchange() -> None:
    script = Script(answer(200, {"SyncTokens": {"DeclarationsToken": "t9"}}))

    async def send(request: Request) -> Canned:
        return script(request)

    token = asyncio.run(drive_async(Conversation(SERVER, "c").declarations_token("t1"), send))
    assert token == "t9"
    assert script.sent[0].headers == {"Authorization": "Bearer c", "If-None-Match": "t1"}
