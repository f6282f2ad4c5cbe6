"""The agent's node-exporter textfile-collector file (``bsi agent once|run --textfile``).

node-exporter's textfile collector reads every ``*.prom`` file in its
``--collector.textfile.directory`` on each scrape; a file caught half-written
would be dropped whole, so it is replaced atomically (:func:`bsi.durable.write_atomic`:
a temporary file, fsynced, renamed over). The text is rendered by
``prometheus_client`` (its exposition format), one sample per metric:

- ``bsi_agent_active_supplement{supplement}`` 1: the supplement the device runs
  (``supplement="none"`` on the baseline, ``"unknown"`` when the agent could not
  read what runs: never the baseline by default);
- ``bsi_agent_last_cycle_timestamp_seconds``: when the last cycle ended (Unix time);
- ``bsi_agent_last_cycle_result{result}`` 1: ``ok``, ``failed`` (an activation,
  relaunch or health check failed), ``unreachable`` (no server) or ``error``
  (anything else the agent refused, e.g. a bad configuration);
- ``bsi_agent_restart_pending_processes``: processes still running the old content
  (NaN when the agent could not read its state: never 0 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from bsi import durable

UNKNOWN = "unknown"
"""The active supplement when the agent could not read what the device runs."""


class CycleResult(StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class AgentGauges:
    """What the file says: the last cycle's end (aware), its result, the active
    supplement (``None``: baseline; :data:`UNKNOWN`) and the restart-pending
    process count (``None``: not known)."""

    finished: datetime
    result: CycleResult
    active: str | None
    restart_pending: int | None


def render(gauges: AgentGauges) -> bytes:
    """The file's text in Prometheus' exposition format."""
    registry = CollectorRegistry()
    Gauge(
        "bsi_agent_active_supplement",
        "The supplement this device runs (none: the baseline)",
        ("supplement",),
        registry=registry,
    ).labels(gauges.active or "none").set(1)
    Gauge(
        "bsi_agent_last_cycle_timestamp_seconds",
        "When the agent's last cycle ended (Unix time)",
        registry=registry,
    ).set(gauges.finished.timestamp())
    Gauge(
        "bsi_agent_last_cycle_result",
        "The agent's last cycle: ok, failed, unreachable or error",
        ("result",),
        registry=registry,
    ).labels(gauges.result.value).set(1)
    Gauge(
        "bsi_agent_restart_pending_processes",
        "Processes still running content a supplement replaced",
        registry=registry,
    ).set(math.nan if gauges.restart_pending is None else gauges.restart_pending)
    return generate_latest(registry)


def write_textfile(path: Path, gauges: AgentGauges) -> None:
    """Replace ``path`` atomically with the rendered gauges (mode 0644: node-exporter reads it)."""
    durable.write_atomic(path, render(gauges), mode=0o644)
