"""The fuzz gate: schemathesis against the real server, on SQLite and PostgreSQL.

Every operation of the OpenAPI document gets generated requests, valid and
invalid (wrong types, missing fields, out-of-range numbers, odd strings),
sent with real credentials so they reach the code behind authentication. Any
5xx fails, and so does a response its operation's schema does not allow.
Bounded by ``BSI_FUZZ_EXAMPLES`` per operation and mode (default 4; 15 under
``CI=true``, a few minutes there).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from server_support import RunningServer

EXAMPLES = int(os.environ.get("BSI_FUZZ_EXAMPLES", "15" if os.environ.get("CI") else "4"))
LONG_POLL = "/v1/ddm/wait"


@pytest.mark.real_socket  # schemathesis sends its requests over a connection
@pytest.mark.server_settings(status_burst=1e9)  # one device sending many reports
def test_no_generated_request_gets_a_5xx_or_breaks_the_schema(server: RunningServer) -> None:
    _, credential = server.enroll()
    headers = {
        "/v1/admin/": {"Authorization": f"Bearer {server.admin_key}"},
        "/v1/ddm/": {"Authorization": f"Bearer {credential}"},
    }
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    sent: dict[str, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        auth = next((h for p, h in headers.items() if operation.path.startswith(p)), {})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            label = operation.label

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: Any) -> None:
                if case.path == LONG_POLL and isinstance(case.query, dict):
                    case.query["timeout"] = 0.01  # a long poll would only wait
                sent[label] = sent.get(label, 0) + 1  # noqa: B023 - called at once, below
                case.call_and_validate(
                    base_url=server.url,
                    headers=auth,  # noqa: B023
                    checks=[not_a_server_error, response_schema_conformance],
                )

            try:
                call()
            except Unsatisfiable:  # nothing to make invalid: no parameters, no body
                continue
            except Exception as error:  # collect every operation's failure, then fail
                failures.append(f"{operation.label} ({mode.value}): {error}"[:2000])
    total = sum(sent.values())
    print(f"\nfuzz: {total} requests over {len(sent)} operations")
    assert failures == [] or len(sent) > 0, failures[:3]
    assert len(sent) >= 20
    assert failures == [], "\n\n".join(failures)
