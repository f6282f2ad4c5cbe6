"""``bsi admin`` for rollouts, rollout plans, maintenance windows, webhooks and events.

Each command is one call of the admin routes in :mod:`bsi.server.admin.rollouts`;
the server checks every plan, window and webhook (:mod:`bsi.domain.rollout`), so
a file is sent as it is and a refusal prints the server's message and hint
(exit 1, nothing changed). Output and exit codes as every ``bsi admin`` command
(:mod:`bsi.commands.admin`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bsi.commands.admin import (
    Csv,
    Json,
    admin_app,
    client,
    done,
    emit,
    err,
    out,
    pages,
    read_document,
    read_file,
    reporting,
    segment,
)
from bsi.errors import InvalidInput

rollouts_app = typer.Typer(
    help="Supplement rollouts: waves and health, plans, halt / resume / advance / abort.",
    no_args_is_help=True,
)
plan_app = typer.Typer(
    help="Rollout plans: a supplement's (starts its rollout) or a platform's default.",
    no_args_is_help=True,
)
windows_app = typer.Typer(help="Maintenance windows of device groups.", no_args_is_help=True)
webhooks_app = typer.Typer(help="Webhooks: signed POSTs of events.", no_args_is_help=True)
rollouts_app.add_typer(plan_app, name="plan")
admin_app.add_typer(rollouts_app, name="rollouts")
admin_app.add_typer(windows_app, name="windows")
admin_app.add_typer(webhooks_app, name="webhooks")

Platform = Annotated[str, typer.Argument(help="e.g. macOS, debian")]
Build = Annotated[str, typer.Argument(help="The supplemental build, e.g. 25D771280a")]
PlanFile = Annotated[
    Path, typer.Option("--file", help="The plan as JSON (README: Rollouts).", show_default=False)
]

WAVE_TABLE = (
    "wave",
    "share",
    "state",
    "devices",
    "installed",
    "failed",
    "earliest_opening",
)
FAILURE_TABLE = ("device", "failure", "detail")
EVENT_TABLE = ("id", "at", "kind", "actor", "device", "supplement", "reason")
WEBHOOK_TABLE = ("id", "url", "kinds", "created_by", "delivered_through", "failed_attempts")


def _rollout_path(platform: str, build: str) -> str:
    return f"/supplements/{segment(platform)}/{segment(build)}/rollout"


def wave_rows(rollout: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per wave of ``GET .../rollout``, with its share: the percent of the
    platform's devices it reaches, and the groups it names."""
    rows = []
    for wave in rollout["waves"]:
        share = f"{wave['percent']:g} %"
        if wave["groups"]:
            share += " + groups " + ", ".join(wave["groups"])
        rows.append({"wave": wave["name"], "share": share, **wave})
    return rows


def _print_rollout(rollout: dict[str, Any], as_json: bool, as_csv: bool) -> None:
    rows = wave_rows(rollout)
    if as_json or as_csv:
        emit(rollout, rows, WAVE_TABLE, as_json=as_json, as_csv=as_csv)
        return
    opened = f", opened {rollout['opened_at']}" if rollout.get("opened_at") else ""
    emit(
        rollout,
        rows,
        WAVE_TABLE,
        as_json=False,
        as_csv=False,
        title=f"{escape(rollout['platform'])} {escape(rollout['build'])}: {rollout['state']}, "
        f"wave {escape(str(rollout['current_wave']))!r} (started {rollout['started_at']}{opened})",
    )
    if rollout.get("halted_because"):
        out.print(f"[bold red]halted:[/bold red] {escape(rollout['halted_because'])}")
    failures = rollout.get("failures") or []
    if failures:
        emit(failures, failures, FAILURE_TABLE, as_json=False, as_csv=False, title="failures")


# -- rollouts --------------------------------------------------------------------


@rollouts_app.command("list")
@reporting
def rollouts_list(
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only this state (repeat): running, halted, ..."),
    ] = None,
    as_json: Json = False,
    as_csv: Csv = False,
) -> None:
    """Every rollout, newest first: its state, open wave and why it halted."""
    rows = client().get("/rollouts", state=state or None)
    emit(
        rows,
        rows,
        ("platform", "build", "state", "current_wave", "started_at", "halted_because"),
        as_json=as_json,
        as_csv=as_csv,
    )


@rollouts_app.command("show")
@reporting
def rollouts_show(
    platform: Platform, build: Build, as_json: Json = False, as_csv: Csv = False
) -> None:
    """A supplement's rollout: its state, each wave (share, state, devices, installed,
    failed, earliest opening), why it halted and which devices failed how."""
    _print_rollout(client().get(_rollout_path(platform, build)), as_json, as_csv)


def _act(action: str) -> Callable[..., None]:
    def act(platform: Platform, build: Build, as_json: Json = False) -> None:
        answer = client().post(f"{_rollout_path(platform, build)}/{action}")
        done(
            answer,
            as_json,
            f"rollout of {platform} {build}: {answer['state']}, wave {answer['current_wave']!r}",
        )

    return reporting(act)


rollouts_app.command("halt", help="Halt a running rollout by hand: no new devices start it.")(
    _act("halt")
)
rollouts_app.command("resume", help="Resume a halted rollout: the same wave again, soak anew.")(
    _act("resume")
)
rollouts_app.command("advance", help="Open the next wave now, whatever soak and health say.")(
    _act("advance")
)
rollouts_app.command(
    "abort",
    help="Abort: withdraw the supplement; its devices return to their last good letter.",
)(_act("abort"))


# -- plans -----------------------------------------------------------------------


@plan_app.command("set")
@reporting
def plan_set(
    platform: Platform,
    file: PlanFile,
    build: Annotated[
        str | None,
        typer.Argument(help="A supplement: start its rollout. Without: the platform's default."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Start a supplement's rollout with a plan, or set the platform's default plan (the
    plan of every supplement first imported for it). The server checks the plan."""
    body = read_document(file)
    admin = client()
    if build is None:
        answer = admin.call(
            "PUT",
            f"/rollout-plans/{segment(platform)}",
            content=body,
            content_type="application/json",
        )
        done(answer, as_json, f"default rollout plan of {platform} set")
        return
    answer = admin.call(
        "PUT", _rollout_path(platform, build), content=body, content_type="application/json"
    )
    if as_json:
        done(answer, True, "")
    else:
        _print_rollout(answer, False, False)


@plan_app.command("show")
@reporting
def plan_show(
    platform: Platform,
    build: Annotated[
        str | None, typer.Argument(help="A supplement's plan; without: the platform's default.")
    ] = None,
) -> None:
    """A plan as JSON: a supplement's rollout's, or the platform's default."""
    admin = client()
    if build is None:
        plan = admin.get(f"/rollout-plans/{segment(platform)}")
    else:
        plan = admin.get(_rollout_path(platform, build))["plan"]
    sys.stdout.write(json.dumps(plan, indent=2) + "\n")


@plan_app.command("delete")
@reporting
def plan_delete(platform: Platform) -> None:
    """Remove the platform's default plan (rollouts already started keep theirs)."""
    client().call("DELETE", f"/rollout-plans/{segment(platform)}")
    out.print(f"{platform} has no default rollout plan")


# -- maintenance windows --------------------------------------------------------------


def _window_path(group: str) -> str:
    return f"/groups/{segment(group)}/maintenance-window"


def _window_sentence(window: dict[str, Any]) -> str:
    return f"{', '.join(window['days'])} {window['start']}-{window['end']} {window['timezone']}"


@windows_app.command("set")
@reporting
def windows_set(
    group: Annotated[str, typer.Argument(help="A device group.")],
    days: Annotated[
        str | None, typer.Option(help="Comma-separated: mon,tue,wed,thu,fri,sat,sun.")
    ] = None,
    start: Annotated[str | None, typer.Option(help="Local time HH:MM.")] = None,
    end: Annotated[
        str | None, typer.Option(help="Local time HH:MM (before start: past midnight).")
    ] = None,
    timezone: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/Berlin.")] = "UTC",
    file: Annotated[
        Path | None, typer.Option("--file", help="The window as JSON instead of the options.")
    ] = None,
    as_json: Json = False,
) -> None:
    """When a group's devices may activate; the server checks the window."""
    if file is not None:
        if days is not None or start is not None or end is not None:
            raise InvalidInput("--file and --days/--start/--end are exclusive")
        body = read_document(file)
    else:
        if days is None or start is None or end is None:
            raise InvalidInput(
                "--days, --start and --end are required (or --file)",
                hint="e.g. --days mon,tue,wed --start 22:00 --end 04:00 --timezone Europe/Berlin",
            )
        window = {
            "days": [d.strip() for d in days.split(",") if d.strip()],
            "start": start,
            "end": end,
            "timezone": timezone,
        }
        body = json.dumps(window).encode()
    answer = client().call(
        "PUT", _window_path(group), content=body, content_type="application/json"
    )
    done(answer, as_json, f"maintenance window of {group}: {_window_sentence(answer)}")


@windows_app.command("show")
@reporting
def windows_show(group: str, as_json: Json = False) -> None:
    """A group's maintenance window."""
    window = client().get(_window_path(group))
    done(window, as_json, f"{group}: {_window_sentence(window)}")


@windows_app.command("delete")
@reporting
def windows_delete(group: str) -> None:
    """Remove a group's maintenance window: its devices activate at any time."""
    client().call("DELETE", _window_path(group))
    out.print(f"{group} has no maintenance window")


# -- webhooks --------------------------------------------------------------------


@webhooks_app.command("add")
@reporting
def webhooks_add(
    url: Annotated[str, typer.Argument(help="Where to POST, e.g. https://hooks.example/bsi")],
    kind: Annotated[
        list[str],
        typer.Option("--kind", help="An event kind to send (repeat), e.g. rollout-halted."),
    ],
    secret_file: Annotated[
        Path | None,
        typer.Option("--secret-file", help="Read the HMAC secret from this file."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Send events of these kinds, signed with a secret (asked for, hidden, when no file)."""
    if secret_file is not None:
        secret = read_file(secret_file).decode("utf-8", errors="replace").strip()
    elif not sys.stdin.isatty():  # a script: no one to ask, and no secret on the command line
        raise InvalidInput(
            "no --secret-file, and no terminal to ask for the webhook secret on",
            hint="write the secret to a file readable only by you and pass --secret-file FILE",
        )
    else:
        secret = typer.prompt("Webhook secret", hide_input=True).strip()
    answer = client().post("/webhooks", {"url": url, "secret": secret, "kinds": kind})
    done(answer, as_json, f"webhook {answer['id']}: {url} gets {', '.join(answer['kinds'])}")


@webhooks_app.command("list")
@reporting
def webhooks_list(as_json: Json = False, as_csv: Csv = False) -> None:
    """Webhooks, how far each has delivered, and its last error (never its secret)."""
    rows = client().get("/webhooks")
    emit(rows, rows, (*WEBHOOK_TABLE, "last_error"), as_json=as_json, as_csv=as_csv)


@webhooks_app.command("remove")
@reporting
def webhooks_remove(
    webhook_id: Annotated[int, typer.Argument(help="Its id (webhooks list).")],
) -> None:
    """Stop sending to a webhook."""
    client().call("DELETE", f"/webhooks/{webhook_id}")
    out.print(f"webhook {webhook_id} removed")


# -- events ----------------------------------------------------------------------


@admin_app.command("events")
@reporting
def events(
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Only this kind (repeat for several).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="Only this device's.")] = None,
    supplement: Annotated[str | None, typer.Option(help="Only this build's.")] = None,
    since: Annotated[
        str | None, typer.Option(help="ISO 8601 instant with offset, e.g. 2026-11-30T04:00:00Z.")
    ] = None,
    after: Annotated[int, typer.Option(help="Events after this id (paging, oldest first).")] = 0,
    newest_first: Annotated[
        bool, typer.Option("--newest-first", help="The newest first (paged by --before).")
    ] = False,
    before: Annotated[
        int | None, typer.Option(help="With --newest-first: events before this id.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Events per page (1-1000).")] = 100,
    every: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    as_json: Json = False,
    as_csv: Csv = False,
) -> None:
    """The event history, oldest first: supplements, rollouts, waves, plans, windows and
    device transitions, each with its actor and reason."""
    params = {
        "kind": kind or None,
        "device": device,
        "supplement": supplement,
        "since": since,
        "limit": limit,
        "newest_first": newest_first or None,
    }
    if newest_first:
        found = list(pages(client(), "/events", params, every, before, cursor="before"))
    else:
        found = list(pages(client(), "/events", {**params, "before": before}, every, after))
    rows = [e for page in found for e in page["events"]]
    last = found[-1]["next"]
    answer = {"events": rows, "next": last}
    emit(answer, rows, EVENT_TABLE, as_json=as_json, as_csv=as_csv)
    if last and not (as_json or as_csv):
        more = f"--before {last}" if newest_first else f"--after {last}"
        err.print(f"[dim]more events: --all, or {more}[/dim]")
