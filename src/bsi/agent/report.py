"""The status report a Linux agent sends: the same DDM items an Apple device reports.

Pure: the agent's facts and what it just did in, a nested DDM status report
out. Using Apple's item names means the server, the admin API and the
compliance reports treat a Debian host and a Mac alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bsi.domain.containers import container_items
from bsi.domain.eligibility import Decision
from bsi.domain.facts import DeviceFacts
from bsi.domain.prerequisite import package_items
from bsi.domain.status import (
    AGENT_DECISION,
    AGENT_DRIFT,
    CLOCK_SKEW,
    FAILURE_REASON,
    INSTALL_STATE,
    MODEL_IDENTIFIER,
    OS_BUILD,
    OS_FAMILY,
    OS_VERSION,
    PENDING_VERSION,
    RESTART_PENDING,
    RESTART_PENDING_PROCESSES,
    SUPPLEMENTAL_BUILD,
    SUPPLEMENTAL_EXTRA,
    InstallState,
    nest_status_items,
)
from bsi.domain.versions import ExtraVersion, SupplementVersion


@dataclass(frozen=True, slots=True)
class Failure:
    reason: str
    count: int
    at: datetime


def status_report(
    facts: DeviceFacts,
    *,
    active_extra: ExtraVersion | None,
    install_state: InstallState,
    pending: SupplementVersion | None = None,
    pending_build: str | None = None,
    failure: Failure | None = None,
    restart_pending: bool = False,
    restart_pending_processes: list[str] | None = None,
    decision: Decision | None = None,
    drift: list[str] | None = None,
    clock_skew: int | None = None,
) -> dict[str, Any]:
    """A full report (the agent always sends every item it knows)."""
    items: dict[str, object] = {
        OS_FAMILY: facts.platform,
        OS_VERSION: str(facts.product_version),
        SUPPLEMENTAL_BUILD: str(facts.supplemental_build or ""),
        SUPPLEMENTAL_EXTRA: str(active_extra or ""),
        INSTALL_STATE: install_state.value,
        PENDING_VERSION: {
            "os-version": str(pending or ""),
            "build-version": pending_build or "",
        },
        RESTART_PENDING: restart_pending,
    }
    if restart_pending_processes:
        # bsi's own item: each process still on old content, "name (pid N in unit) uses old ...".
        items[RESTART_PENDING_PROCESSES] = restart_pending_processes[:50]
    if decision is not None:
        # bsi's own item: the agent decides with facts the server lacks (battery).
        items[AGENT_DECISION] = {
            "outcome": decision.outcome.value,
            "reason": decision.reason.value,
            "message": decision.message,
        }
    if facts.build is not None:  # a stock distribution has none: packages place it
        items[OS_BUILD] = str(facts.build)
    items.update(
        package_items(
            facts.package_manager, facts.packages, facts.file_digests, facts.packages_asked
        )
    )
    items.update(container_items(facts.containers))
    if drift:
        # bsi's own item: files the active supplement manages that something else changed.
        items[AGENT_DRIFT] = [line[:500] for line in drift[:100]]
    if clock_skew is not None:
        # bsi's own item: device clock minus server clock (HTTP Date), seconds.
        items[CLOCK_SKEW] = clock_skew
    if facts.model_identifier:
        items[MODEL_IDENTIFIER] = facts.model_identifier
    if failure is not None:
        items[FAILURE_REASON] = {
            "reason": failure.reason[:1000],
            "count": failure.count,
            "timestamp": failure.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    return {"StatusItems": nest_status_items(items), "Errors": [], "FullReport": True}
