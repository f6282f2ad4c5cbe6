"""One device cannot hurt another: hostile reports, bad bytes, floods."""

from __future__ import annotations

import json
import threading
import time

import pytest

from bsi.domain.status import MAX_STATUS_ITEMS
from reports import macos_report
from server_support import RunningServer

MIB = 1024 * 1024


def hostile_reports() -> dict[str, bytes]:
    """1 MiB reports of the shapes that used to cost quadratic time or many rows."""
    flat = macos_report()
    flat["StatusItems"]["vendor"] = {f"k{i}": i for i in range(60_000)}
    wide = macos_report()
    wide["StatusItems"]["vendor"] = {
        f"k{i}": "v" * 230 for i in range(MAX_STATUS_ITEMS - 20)
    }  # under every limit: stored
    deep_list = macos_report()
    deep_list["StatusItems"]["app"] = {
        "managed": {"list": [{"identifier": f"a{i}", "name": "x" * 20} for i in range(17_000)]}
    }
    bodies = {"flat": flat, "wide": wide, "list": deep_list}
    encoded = {name: json.dumps(body).encode() for name, body in bodies.items()}
    for name, body in encoded.items():
        assert 0.5 * MIB < len(body) <= MIB, (name, len(body))
    return encoded


@pytest.mark.alone  # a 1 s bound: another test's load beside it is not the flood's
@pytest.mark.real_socket  # 1 MiB bodies read off a connection, as a device sends them
@pytest.mark.server_settings(max_body_bytes=MIB, status_burst=60)  # each shape once, then 429
def test_a_hostile_device_does_not_delay_another_devices_report(server: RunningServer) -> None:
    """1 MiB reports back to back: each is merged in linear time outside the write
    transaction, the rate limit (a token per 64 KiB) soon turns the rest away with
    429, and the honest device's reports are answered within a second throughout."""
    _, hostile = server.device()
    _, honest = server.device()
    assert honest.put("/v1/ddm/status", json=macos_report()).status_code == 200
    bodies = hostile_reports()
    answers: dict[str, list[int]] = {name: [] for name in bodies}
    hostile_seconds: list[float] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            for name, body in bodies.items():
                started = time.monotonic()
                answers[name].append(hostile.put("/v1/ddm/status", content=body).status_code)
                hostile_seconds.append(time.monotonic() - started)

    threads = [threading.Thread(target=flood)]

    def honest_reports(seconds: float) -> list[float]:
        delays = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            response = honest.put("/v1/ddm/status", json=macos_report())
            delays.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            time.sleep(0.2)  # ~30 reports in all: within the honest device's own burst of 60
        return delays

    calm = honest_reports(2)  # the same machine, no flood: what a report costs here
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        delays = honest_reports(4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    worst, calm_worst = max(delays), max(calm)
    print(
        f"\nhonest device: {len(delays)} reports during a 1 MiB flood, worst {worst * 1000:.0f} ms"
        f" (without the flood {calm_worst * 1000:.0f} ms), median"
        f" {sorted(delays)[len(delays) // 2] * 1000:.0f} ms; hostile reports:"
        f" {len(hostile_seconds)}, worst {max(hostile_seconds) * 1000:.0f} ms;"
        f" answers { ({k: sorted(set(v)) for k, v in answers.items()}) }"
    )
    assert worst - calm_worst < 1.0  # delayed by less than a second
    codes = {code for codes in answers.values() for code in codes}
    assert answers["flat"][0] == 400  # over the item limit
    assert answers["wide"][0] == answers["list"][0] == 200  # under every limit: stored
    assert codes <= {200, 400, 429}  # 429 once over its rate (its own test is below)


@pytest.mark.server_settings(status_burst=3, status_per_second=0.01)
def test_a_device_over_its_report_rate_gets_429_and_others_do_not(server: RunningServer) -> None:
    _, noisy = server.device()
    _, quiet = server.device()
    codes = [noisy.put("/v1/ddm/status", json=macos_report()).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = noisy.put("/v1/ddm/status", json=macos_report())
    assert int(refused.headers["Retry-After"]) >= 1
    assert "rate" in refused.json()["message"]
    assert quiet.put("/v1/ddm/status", json=macos_report()).status_code == 200
