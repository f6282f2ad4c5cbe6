"""What a simulation shows: live progress, the compliance table, the patch-window percentiles.

The compliance figures come from the server's admin API (``/v1/admin/devices``,
``/v1/admin/compliance/supplements``, ``/v1/admin/compliance/cves``,
``/v1/admin/patch-windows``), so the demo shows what an operator would see,
next to what each device decided for itself. The two differ in one place on
purpose: DDM carries no battery charge, so the server counts a device that
waits for power as "pending"; the device's own report (``bsi.agent.decision``)
says why it waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from bsi.sim.devices import Phase
from bsi.sim.engine import DeviceResult, SimResult, Snapshot

_PHASE_STYLE: Mapping[Phase, str] = {
    Phase.INSTALLED: "green",
    Phase.PENDING: "yellow",
    Phase.DEFERRED: "magenta",
    Phase.BLOCKED: "red",
    Phase.UP_TO_DATE: "cyan",
    Phase.OFFLINE: "dim",
    Phase.STARTING: "dim",
    Phase.FAILED: "bold red",
}
_OUTCOME_STYLE: Mapping[str, str] = {
    "install": "yellow",
    "enforced": "yellow",
    "deferred": "magenta",
    "blocked": "red",
    "up-to-date": "green",
}


def progress_view(snapshot: Snapshot) -> RenderableType:
    """One line of counts by state, and how far the roll-out is."""
    line = Text()
    line.append(f"{snapshot.stage:<9} ", style="bold")
    if snapshot.since_publish is not None:
        line.append(f"t+{snapshot.since_publish:6.1f} s  ")
    line.append(f"installed {snapshot.installed}/{snapshot.expected} eligible  ")
    for phase in Phase:
        count = snapshot.phases.get(phase, 0)
        if count:
            line.append(f"{phase.value} {count}  ", style=_PHASE_STYLE[phase])
    return line


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def percentile_table(result: SimResult) -> Table:
    measured = result.measured()
    table = Table(
        title=f"Patch window: publish -> supplement reported, {len(measured)} eligible online "
        "devices"
    )
    table.add_column("measured as")
    for p in (50, 90, 99):
        table.add_column(f"p{p}", justify="right")
    table.add_column("reached", justify="right")
    for source, label in (
        ("server", "recorded by the server"),
        ("device", "acknowledged to the device"),
    ):
        windows = result.windows(source)  # type: ignore[arg-type]
        ranks = result.percentiles(source)  # type: ignore[arg-type]
        reached = sum(1 for w in windows if w is not None)
        table.add_row(
            label,
            *(seconds(ranks[p]) if ranks[p] is not None else "not yet" for p in (50, 90, 99)),
            f"{reached}/{len(windows)}",
        )
    return table


def _server_decision(record: Mapping[str, Any]) -> str:
    outcome, reason = record.get("decision_outcome"), record.get("decision_reason")
    return f"{outcome}/{reason}" if outcome else "-"


def _own_decision(device: DeviceResult) -> tuple[str, str]:
    """The device's own (outcome, reason); once it runs the supplement, that it is up to date.

    A device decides "install" and then installs; its last decision still says
    "install" until its next check-in, which would read as "not yet".
    """
    status = device.status
    if status.active_build:
        return "up-to-date", "supplement-installed"
    return status.outcome or "-", status.reason or ""


def device_table(result: SimResult) -> Table:
    """Per device: facts, what it runs (per the server), its decision and why."""
    table = Table(title="Compliance: who has 26.3.1 (a), who does not, and why")
    for column in ("device", "OS (build)", "arch, power", "runs", "decision"):
        table.add_column(column, no_wrap=True)
    table.add_column("why", overflow="fold", ratio=1)
    table.add_column("window", justify="right", no_wrap=True)
    published = result.published_at
    for device in result.devices:
        spec, status, record = device.spec, device.status, device.server
        build = record.get("supplemental_build")
        running = f"{record.get('supplemental_extra') or ''} {build}".strip() if build else "-"
        outcome, reason = _own_decision(device)
        decision = Text(outcome, style=_OUTCOME_STYLE.get(outcome, ""))
        decision.append(f"\n{reason}")
        why = status.message or ""
        server_says = _server_decision(record)
        if status.active_build:
            why = f"installed: {why}"
        elif status.outcome and server_says not in ("-", f"{outcome}/{reason}"):
            why += f" (the server says {server_says}"
            why += ": DDM carries no battery charge)" if reason == "battery-low" else ")"
        if not status.online:
            why = "offline since before the publish"
        if status.failure:
            why = f"FAILED: {status.failure}"
        window = (
            seconds(device.server_installed_at - published)
            if device.server_installed_at is not None and published is not None
            else "-"
        )
        table.add_row(
            f"{spec.name} {spec.mode}\n[dim]{status.device_id[:8]}[/dim]",
            f"{record.get('product_version') or spec.profile.version}\n"
            f"({record.get('build') or spec.profile.build})",
            f"{spec.profile.architecture}\n{spec.profile.power()}",
            running,
            decision,
            Text(why),
            window,
        )
    return table


def kind_table(result: SimResult) -> Table:
    """Per kind of device: how many, how many run the supplement, the decisions seen."""
    table = Table(title="By kind of device")
    for column in ("kind", "devices", "installed", "decisions (as the devices report them)"):
        table.add_column(column, overflow="fold")
    kinds: dict[str, list[DeviceResult]] = {}
    for device in result.devices:
        kinds.setdefault(device.spec.profile.kind.value, []).append(device)
    for kind, devices in kinds.items():
        installed = sum(1 for d in devices if d.server.get("supplemental_build"))
        reasons = Counter(
            "/".join(_own_decision(d)) if d.status.online else "offline" for d in devices
        )
        table.add_row(
            f"{kind}\n[dim]{devices[0].spec.profile.summary}[/dim]",
            str(len(devices)),
            str(installed),
            ", ".join(f"{r}: {n}" for r, n in reasons.most_common()),
        )
    return table


def supplement_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="Supplements (the server's compliance view)")
    for column in ("supplement", "build", "state", "installed", "pending", "blocked (by reason)"):
        table.add_column(column, overflow="fold")
    for row in rows:
        blocked = ", ".join(f"{k}: {v}" for k, v in sorted(row["blocked_by_reason"].items()))
        table.add_row(
            f"{row['platform']} {row['supplement']}",
            row["build"],
            row["state"],
            str(row["installed"]),
            str(row["pending"]),
            blocked or "-",
        )
    return table


def cve_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="CVEs: devices still exposed")
    for column in ("CVE", "fixed by", "exposed devices"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["cve"], ", ".join(row["supplements"]), str(row["exposed"]))
    return table


def summary_lines(result: SimResult) -> list[str]:
    options = result.options
    how = (
        f"wake-up long poll, polling every {options.poll_interval:g} s ± "
        f"{options.jitter:.0%} as the fallback"
        if options.wake
        else f"polling only, every {options.poll_interval:g} s ± {options.jitter:.0%} "
        "(first poll uniform over one interval)"
    )
    full = sum(1 for d in result.devices if d.spec.full)
    lines = [
        f"{len(result.devices)} devices ({full} full agent, {len(result.devices) - full} light), "
        f"{how}",
        "stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items()),
    ]
    if full < len(result.devices):
        lines.append(
            "light devices run the agent's check-in cycle from their own device roots with a "
            "record-only activator (no download, no file swap); "
            "full devices run the agent itself"
        )
    if result.sync_seconds is not None:
        lines.append(
            f"patch window: from just before POST /v1/admin/catalog/sync-repository (which "
            f"took {result.sync_seconds * 1000:.0f} ms) to the server's record of each device's "
            "first report of the supplement (GET /v1/admin/patch-windows?per_device=true; that "
            "endpoint's own percentiles count from the posting date, 00:00 UTC)"
        )
    else:
        lines.append(
            "nothing was published by this run (no TUF repository to sign into): the times "
            "count from the start of the roll-out stage"
        )
    errors = sum(d.status.errors for d in result.devices)
    failed = [d for d in result.devices if d.status.failure]
    if errors or failed:
        lines.append(f"errors during the run: {errors}; devices failed: {len(failed)}")
        lines += [f"  {d.spec.name}: {d.status.failure}" for d in failed[:5]]
    if not result.completed:
        lines.append(f"the roll-out did not finish within {options.timeout:g} s")
    wrong = result.mismatches()
    if wrong:
        lines.append(
            f"{len(wrong)} device(s) decided other than their kind should: "
            + ", ".join(f"{d.spec.name} ({d.spec.profile.kind.value})" for d in wrong[:10])
        )
    return lines


def render_result(result: SimResult, console: Console, *, per_device: bool) -> None:
    parts: list[RenderableType] = []
    if per_device:
        parts.append(device_table(result))
    parts += [
        kind_table(result),
        supplement_table(result.supplements),
        cve_table(result.cves),
        percentile_table(result),
    ]
    console.print(Group(*parts))
    for line in summary_lines(result):
        console.print(line, highlight=False)
