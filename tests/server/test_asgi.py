"""The served app as the server process builds it from its environment."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

from bsi.server.asgi import SUPERVISOR_PID, YOUNG_COLLECTION_THRESHOLD, app_from_environment


def test_what_the_server_process_loaded_is_left_out_of_full_collections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full garbage collection walks every tracked object while it holds the
    interpreter, so every request waits for it: with the startup heap in it (modules,
    classes, the app) each one took 150-200 ms during a decision pass. What the process
    loaded to start is frozen out of them; what it makes later is still collected, with
    fewer collections of the youngest generation."""
    monkeypatch.setenv("BSI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    switch_interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    gc.unfreeze()
    try:
        app = app_from_environment()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert frozen > len(gc.get_objects())  # most of what is tracked now
        later = [app]  # made after the freeze: still collected
        assert any(tracked is later for tracked in gc.get_objects())
        assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(switch_interval)


def test_the_frameworks_own_telemetry_is_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bsi reports Prometheus metrics; FastAPI's OpenTelemetry hook, left on, looks for
    configured global providers on every request."""
    monkeypatch.setenv("BSI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv(SUPERVISOR_PID, raising=False)
    switch_interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        app = app_from_environment()
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(switch_interval)
    config = app._telemetry  # FastAPI keeps no public view of it
    assert (config["tracing"], config["metrics"], config["logs"]) == (False, False, False)
