"""Acknowledged means durable: a power cut loses no acknowledged status report.

The server's data directory lives on an ext4 file system in a loop-mounted
image file (tests/loopfs.py); each copy of the image taken while devices report
is a power cut. Each copy is mounted (the journal replays) and the database
opened: every report acknowledged before the copy began must be there.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from bsi.server.app import ServerSettings, create_app, prepare
from loopfs import loop_filesystem, mounted, power_cut
from pgcluster import free_port
from reports import macos_report
from server_support import Clock

DEVICES = 6
CUTS = 3


@pytest.fixture
def filesystem(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with loop_filesystem(tmp_path) as (image, live):
        yield image, live


def test_a_power_cut_loses_no_acknowledged_status_report(
    filesystem: tuple[Path, Path], tmp_path: Path
) -> None:
    image, live = filesystem
    settings = ServerSettings(data_dir=live / "data", status_burst=1e9, status_per_second=1e9)
    clock = Clock()
    service = prepare(settings, clock)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service, settings), port=port, log_level="warning")
    )
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {_admin_key(live)}"})
    token = admin.post("/v1/admin/enrollment-tokens", json={}).json()["token"]
    credentials = [
        httpx.post(f"{url}/v1/enroll", json={"token": token}).json() for _ in range(DEVICES)
    ]
    acknowledged: dict[str, list[tuple[int, float]]] = {c["device_id"]: [] for c in credentials}
    stop = threading.Event()

    def report(enrolled: dict[str, str]) -> None:
        device = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {enrolled['credential']}"}
        )
        for sequence in itertools.count(1):
            if stop.is_set():
                return
            body = macos_report()
            body["StatusItems"]["vendor"] = {"sequence": sequence}
            if device.put("/v1/ddm/status", json=body).status_code == 200:
                acknowledged[enrolled["device_id"]].append((sequence, time.monotonic()))

    reporters = [threading.Thread(target=report, args=(c,)) for c in credentials]
    for thread in reporters:
        thread.start()
    cuts: list[tuple[Path, dict[str, int]]] = []
    try:
        for n in range(CUTS):
            time.sleep(random.uniform(0.5, 1.5))
            instant = time.monotonic()
            promised = {
                device: max((s for s, t in acks if t < instant), default=0)
                for device, acks in list(acknowledged.items())
            }
            copy = tmp_path / f"cut-{n}.img"
            power_cut(image, copy)
            cuts.append((copy, promised))
    finally:
        stop.set()
        for thread in reporters:
            thread.join()
        server.should_exit = True
        serving.join(timeout=20)
        service.close()
    lost = checked = 0
    for n, (copy, promised) in enumerate(cuts):
        with mounted(copy, tmp_path / f"after-{n}") as after:
            stored = _stored_sequences(after / "data" / "bsi.db")
        for device, sequence in promised.items():
            checked += sequence
            if stored.get(device, 0) < sequence:
                lost += sequence - stored.get(device, 0)
    reports = sum(len(acks) for acks in acknowledged.values())
    print(f"\npower cut: {CUTS} cuts, {reports} acknowledged reports; {lost} missing (all cuts)")
    assert reports > 0
    assert lost == 0


def _stored_sequences(path: Path) -> dict[str, int]:
    """Each device's last stored report; nothing at all if the database did not survive."""
    database = sqlite3.connect(path)
    try:
        rows = database.execute("SELECT id, status_items FROM devices").fetchall()
    except sqlite3.DatabaseError:
        return {}
    finally:
        database.close()
    return {device: json.loads(items).get("vendor.sequence", 0) for device, items in rows}


def _admin_key(live: Path) -> str:
    return (live / "data" / "admin-api-key").read_text().strip()
