"""``bsi admin``: the admin API from a terminal or a script.

Each command is one admin API call (see :mod:`bsi.commands.admin_client` for
where the server and key come from, and the exit codes). Lists print as a
table, or with ``--json`` the server's JSON as it came, or with ``--csv`` one
row per item (lists joined by spaces, objects as JSON).
"""

from __future__ import annotations

import csv
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bsi.commands.admin_client import (
    API_KEY_ENV,
    SERVER_ENV,
    AdminClient,
    Connection,
    check_server_url,
    config_path,
    exit_code_for,
    resolve,
    write_config,
)
from bsi.domain.compliance import CVE_COLUMNS, SUPPLEMENT_COLUMNS
from bsi.errors import BsiError, InvalidInput
from bsi.server.paths import MAX_PAGE, MAX_STALE_HOURS, MAX_TOKEN_HOURS
from bsi.strict import MAX_INT32, read_json, read_json_lines, read_plist

P = ParamSpec("P")
R = TypeVar("R")

admin_app = typer.Typer(
    help="The admin API of a running bsi server (devices, supplements, compliance, keys). "
    "Exit codes: 0 done, 1 refused by the server, 2 bad usage, 3 server unreachable or "
    "key refused.",
    no_args_is_help=True,
)
devices_app = typer.Typer(help="Devices: list, detail, revoke, decommission.", no_args_is_help=True)
supplements_app = typer.Typer(
    help="Supplements and their states: pause, resume, withdraw.", no_args_is_help=True
)
compliance_app = typer.Typer(help="Compliance per supplement and per CVE.", no_args_is_help=True)
groups_app = typer.Typer(help="Device groups.", no_args_is_help=True)
declarations_app = typer.Typer(help="DDM declarations and their groups.", no_args_is_help=True)
catalog_app = typer.Typer(help="The server's supplement catalogue.", no_args_is_help=True)
for _sub, _name in (
    (devices_app, "devices"),
    (supplements_app, "supplements"),
    (compliance_app, "compliance"),
    (groups_app, "groups"),
    (declarations_app, "declarations"),
    (catalog_app, "catalog"),
):
    admin_app.add_typer(_sub, name=_name)

err = Console(stderr=True, soft_wrap=True, highlight=False)
PIPED_WIDTH = 240
"""Table width when stdout is not a terminal (a pipe, a file): ids are never cut short."""


class _Out:
    """stdout as a rich console, made when printing (tests and pipes swap ``sys.stdout``)."""

    def print(self, *objects: Any) -> None:
        width = None if sys.stdout.isatty() else PIPED_WIDTH
        Console(file=sys.stdout, soft_wrap=True, highlight=False, width=width).print(*objects)


out = _Out()

Json = Annotated[bool, typer.Option("--json", help="The server's JSON, as it answered.")]
Csv = Annotated[bool, typer.Option("--csv", help="CSV, one row per item.")]


class _Options:
    server: str | None = None
    api_key: str | None = None


_options = _Options()


@admin_app.callback()
def _admin(
    server: Annotated[
        str | None,
        typer.Option(
            "--server", envvar=SERVER_ENV, help="The server's URL, e.g. http://localhost:8080."
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar=API_KEY_ENV, help="An API key of that server."),
    ] = None,
) -> None:
    """Server and key: --server/--api-key, BSI_SERVER/BSI_API_KEY, or 'bsi admin login'."""
    _options.server, _options.api_key = server, api_key


def reporting(function: Callable[P, R]) -> Callable[P, R]:
    """Print a :class:`BsiError` with the server's message and hint; exit with its code."""

    @functools.wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return function(*args, **kwargs)
        except BsiError as error:
            err.print(f"[red]error:[/red] {escape(error.message)}")
            if error.hint:
                err.print(f"[dim]hint:[/dim] {escape(error.hint)}")
            raise typer.Exit(exit_code_for(error)) from None

    return run


def client() -> AdminClient:
    return AdminClient(resolve(_options.server, _options.api_key))


def _format(as_json: bool, as_csv: bool) -> str:
    if as_json and as_csv:
        raise InvalidInput("--json and --csv are exclusive")
    return "json" if as_json else "csv" if as_csv else "table"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def emit(
    answer: Any,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    as_csv: bool,
    title: str | None = None,
) -> None:
    """Print ``answer`` as JSON, or ``rows`` as CSV (every key) or a table (``columns``)."""
    chosen = _format(as_json, as_csv)
    if chosen == "json":
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    elif chosen == "csv":
        names = list(dict.fromkeys(k for row in rows for k in row)) or list(columns)
        writer = csv.DictWriter(sys.stdout, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(row.get(k)) for k in names} for row in rows)
    else:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column.replace("_", " "), overflow="fold")
        for row in rows:
            table.add_row(*(escape(_cell(row.get(c))) for c in columns))
        out.print(table)
        if not rows:
            err.print("[dim](none)[/dim]")


def done(answer: Any, as_json: bool, sentence: str) -> None:
    """A write's answer: the JSON with ``--json``, else one sentence."""
    if as_json:
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
    else:
        out.print(sentence)


def _hours_within(most: float) -> Callable[[float | None], float | None]:
    """An option's check: hours above 0 and at most ``most`` (the admin API's bound,
    :mod:`bsi.server.paths`), refused before asking, naming the option (exit 2)."""

    def check(value: float | None) -> float | None:
        if value is not None and not 0 < value <= most:
            raise typer.BadParameter(f"{value:g} is not above 0 and at most {most:g} hours")
        return value

    return check


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror}") from None


def read_document(path: Path) -> bytes:
    """The bytes of a document the server reads (JSON, or by its suffix a property list
    or NDJSON), read here first by the same strict rules: a broken file is refused
    naming the file and the line (exit 2) before anything is sent, where the server
    could only name the ``request body``."""
    raw = read_file(path)
    kind = _content_type(path)
    if kind == "application/x-plist":
        read_plist(raw, source=str(path))
    elif kind == "application/x-ndjson":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{path}: not UTF-8", hint="save the file as UTF-8") from None
        for _ in read_json_lines(text, source=str(path)):
            pass
    else:
        read_json(raw, source=str(path), unique_keys=True)
    return raw


# -- login ------------------------------------------------------------------


@admin_app.command("login")
@reporting
def login(
    server: Annotated[
        str | None, typer.Option("--server", help="The server's URL (default: as for any command).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="An API key; asked for (hidden) when not given."),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Read the key from this file (e.g. admin-api-key)."),
    ] = None,
) -> None:
    """Check a server and key, then remember them for every later 'bsi admin' command.

    Written to $XDG_CONFIG_HOME/bsi/admin.json (default ~/.config), readable by
    you only. Nothing is written when the server refuses the key.
    """
    url = server or _options.server
    if not url:
        raise InvalidInput("--server is required", hint="e.g. --server http://localhost:8080")
    key = api_key or _options.api_key
    if api_key_file is not None:
        key = read_file(api_key_file).decode("utf-8", errors="replace").strip()
    if not key:
        key = typer.prompt("API key", hide_input=True).strip()
    connection = Connection(check_server_url(url), key)
    admin = AdminClient(connection)
    try:
        admin.get("/groups")  # any read: proves the server is bsi and the key is known
    finally:
        admin.close()
    path = config_path()
    write_config(path, connection)
    out.print(f"logged in to {connection.server}; saved in {path}")


@admin_app.command("logout")
@reporting
def logout() -> None:
    """Forget the server and key 'bsi admin login' saved."""
    path = config_path()
    path.unlink(missing_ok=True)
    out.print(f"removed {path}")


# -- devices ----------------------------------------------------------------

DEVICE_TABLE = (
    "device_id",
    "group",
    "platform",
    "product_version",
    "build",
    "supplemental_extra",
    "decision_outcome",
    "decision_reason",
    "decision_supplement_build",
    "last_seen_at",
)


def pages(
    admin: AdminClient,
    path: str,
    params: dict[str, Any],
    every: bool,
    start: Any = None,
    cursor: str = "after",
) -> Iterator[Any]:
    """The pages of a list the server pages by ``next`` (the ``cursor`` parameter of the
    next request, from ``start``): the first page, or every one with ``every``."""
    at = start
    while True:
        page = admin.get(path, **params, **{cursor: at})
        yield page
        at = page.get("next")
        if not every or not at:
            return


@devices_app.command("list")
@reporting
def devices_list(
    group: Annotated[str | None, typer.Option(help="Only this group.")] = None,
    platform: Annotated[str | None, typer.Option(help="macOS, iOS, debian, ...")] = None,
    product_version: Annotated[str | None, typer.Option(help="e.g. 26.3.1")] = None,
    build: Annotated[str | None, typer.Option(help="OS build, e.g. 25D2128")] = None,
    supplemental_build: Annotated[str | None, typer.Option(help="e.g. 25D771280a")] = None,
    extra_version: Annotated[str | None, typer.Option(help="e.g. (a)")] = None,
    outcome: Annotated[
        str | None,
        typer.Option(help="install, enforced, up-to-date, deferred, blocked, unknown"),
    ] = None,
    reason: Annotated[str | None, typer.Option(help="A decision reason code.")] = None,
    target_build: Annotated[str | None, typer.Option(help="The decision's supplement.")] = None,
    stale_hours: Annotated[
        float | None,
        typer.Option(
            help="Not seen for this many hours (or never).",
            callback=_hours_within(MAX_STALE_HOURS),
        ),
    ] = None,
    seen_after: Annotated[str | None, typer.Option(help="ISO 8601 instant.")] = None,
    seen_before: Annotated[str | None, typer.Option(help="ISO 8601 instant.")] = None,
    lifecycle: Annotated[
        str | None, typer.Option(help="active, revoked or decommissioned.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="Devices per page.")] = 100,
    every: Annotated[bool, typer.Option("--all", help="Follow every page.")] = False,
    as_json: Json = False,
    as_csv: Csv = False,
) -> None:
    """Devices with their decision (outcome, reason); unknown ones included."""
    _format(as_json, as_csv)
    params = {
        "group": group,
        "platform": platform,
        "product_version": product_version,
        "build": build,
        "supplemental_build": supplemental_build,
        "extra_version": extra_version,
        "outcome": outcome,
        "reason": reason,
        "target_build": target_build,
        "stale_hours": stale_hours,
        "seen_after": seen_after,
        "seen_before": seen_before,
        "lifecycle": lifecycle,
        "limit": limit,
    }
    admin = client()
    found = list(pages(admin, "/devices", params, every))
    rows = [d for page in found for d in page["devices"]]
    answer = {"devices": rows, "next": found[-1]["next"]}
    emit(answer, rows, DEVICE_TABLE, as_json=as_json, as_csv=as_csv)
    if answer["next"] and not (as_json or as_csv):
        err.print(f"[dim]more devices: --all, or the next page after {answer['next']}[/dim]")


@devices_app.command("show")
@reporting
def devices_show(
    device_id: Annotated[str, typer.Argument(help="The device's id.")],
    history: Annotated[
        int,
        typer.Option(min=0, max=1000, help="Its latest events to print (not with --json)."),
    ] = 20,
    as_json: Json = False,
) -> None:
    """One device: facts, decision and its sentence, status items, channels, findings,
    and its latest events (all of them: 'bsi admin events --device ID')."""
    admin = client()
    device = admin.get(f"/devices/{segment(device_id)}")
    if as_json:
        sys.stdout.write(json.dumps(device, indent=2) + "\n")
        return
    table = Table(show_header=False, title=f"device {escape(device_id)}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in device.items():
        if key != "status_items":
            table.add_row(key.replace("_", " "), escape(_cell(value)))
    out.print(table)
    items = device.get("status_items") or {}
    if items:
        listed = Table(title="status items", title_justify="left")
        listed.add_column("item")
        listed.add_column("value")
        for name, value in sorted(items.items()):  # stored flat: dotted item names
            listed.add_row(escape(name), escape(_cell(value)))
        out.print(listed)
    if history > 0:
        page = admin.get("/events", device=device_id, newest_first=True, limit=history)
        emit(
            page,
            page["events"],
            ("at", "kind", "actor", "supplement", "reason"),
            as_json=False,
            as_csv=False,
            title="history, newest first",
        )
        if page["next"]:
            err.print(f"[dim]older events: bsi admin events --device {escape(device_id)}[/dim]")


def segment(value: str) -> str:
    """A path segment, percent-encoded (device ids may hold ':' and '/')."""
    from urllib.parse import quote

    return quote(value, safe="")


@devices_app.command("revoke")
@reporting
def devices_revoke(device_id: str, as_json: Json = False) -> None:
    """Refuse the device's credential (every server process within a second)."""
    answer = client().post(f"/devices/{segment(device_id)}/revoke")
    done(answer, as_json, f"revoked {device_id}")


@devices_app.command("decommission")
@reporting
def devices_decommission(device_id: str) -> None:
    """Revoke the device and leave it out of lists and compliance (its history is kept)."""
    client().call("DELETE", f"/devices/{segment(device_id)}")
    out.print(f"decommissioned {device_id}")


@devices_app.command("re-enroll")
@reporting
def devices_reenroll(device_id: str, as_json: Json = False) -> None:
    """A new credential for the device, shown once; every earlier one is refused."""
    answer = client().post(f"/devices/{segment(device_id)}/re-enroll")
    done(answer, as_json, f"new credential for {device_id}: {answer['credential']}")


@devices_app.command("import")
@reporting
def devices_import(
    path: Annotated[Path, typer.Argument(help="JSON record or array, plist, or NDJSON.")],
    form: Annotated[str, typer.Option("--format", help="auto, ddm, mdm or osquery.")] = "auto",
    group: Annotated[str | None, typer.Option(help="Group for new devices.")] = None,
    as_json: Json = False,
) -> None:
    """Import inventory (MDM DeviceInformation, osquery rows, DDM reports); all or nothing."""
    answer = upload("/inventory", path, format=form, group=group)
    done(answer, as_json, f"{answer['devices']} device(s), {answer['created']} new")


def upload(endpoint: str, path: Path, **params: Any) -> Any:
    """POST the file's bytes as they are (the server reads and refuses them whole)."""
    return client().call(
        "POST",
        endpoint,
        params=params,
        content=read_document(path),
        content_type=_content_type(path),
    )


def _content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".plist":
        return "application/x-plist"
    if suffix in (".ndjson", ".jsonl"):
        return "application/x-ndjson"
    return "application/json"


@admin_app.command("enrollments")
@reporting
def enrollments_import(
    path: Annotated[Path, typer.Argument(help='{"enrollments": [...]} as POST enrollments takes.')],
    as_json: Json = False,
) -> None:
    """Import NanoMDM enrollment ids (devices before their channels; all or nothing)."""
    answer = client().call(
        "POST", "/enrollments", content=read_document(path), content_type="application/json"
    )
    done(answer, as_json, f"{answer['created']} created, {answer['refreshed']} refreshed")


# -- supplements ------------------------------------------------------------

SUPPLEMENT_TABLE = ("platform", "supplement", "build", "state", "posted", "cves")


@supplements_app.command("list")
@reporting
def supplements_list(as_json: Json = False, as_csv: Csv = False) -> None:
    """Every supplement the server knows, with its state (published, paused, withdrawn)."""
    rows = client().get("/supplements")
    emit(rows, rows, SUPPLEMENT_TABLE, as_json=as_json, as_csv=as_csv)


def _steer(action: str) -> Callable[..., None]:
    def steer(
        platform: Annotated[str, typer.Argument(help="e.g. macOS, debian")],
        build: Annotated[str, typer.Argument(help="The supplemental build, e.g. 25D771280a")],
        as_json: Json = False,
    ) -> None:
        answer = client().post(f"/supplements/{segment(platform)}/{segment(build)}/{action}")
        done(answer, as_json, f"{platform} {build} is now {answer['state']}")

    return reporting(steer)


supplements_app.command("pause", help="Stop offering a supplement (devices keep it).")(
    _steer("pause")
)
supplements_app.command("resume", help="Offer a paused supplement again.")(_steer("resume"))
supplements_app.command(
    "withdraw", help="Withdraw a supplement for good: devices roll it back; never offered again."
)(_steer("withdraw"))


@supplements_app.command("allow-retry")
@reporting
def supplements_allow_retry(
    platform: str,
    build: str,
    device: Annotated[str | None, typer.Option("--device", help="Only this device.")] = None,
    as_json: Json = False,
) -> None:
    """Let devices try a supplement again after it failed or was rolled back."""
    answer = client().post(
        f"/supplements/{segment(platform)}/{segment(build)}/allow-retry", device_id=device
    )
    done(answer, as_json, f"devices may retry {platform} {build} ({device or 'every device'})")


# -- compliance -------------------------------------------------------------


@compliance_app.command("supplements")
@reporting
def compliance_supplements(as_json: Json = False, as_csv: Csv = False) -> None:
    """Per supplement: installed, pending, restart pending, blocked, unknown devices."""
    rows = client().get("/compliance/supplements")
    emit(rows, rows, SUPPLEMENT_COLUMNS, as_json=as_json, as_csv=as_csv)


@compliance_app.command("cves")
@reporting
def compliance_cves(as_json: Json = False, as_csv: Csv = False) -> None:
    """Per CVE: devices exposed, unknown, restart pending, fixed."""
    rows = client().get("/compliance/cves")
    emit(rows, rows, CVE_COLUMNS, as_json=as_json, as_csv=as_csv)


@compliance_app.command("patch-windows")
@reporting
def compliance_patch_windows(
    per_device: Annotated[bool, typer.Option(help="One row per device and supplement.")] = False,
    as_json: Json = False,
    as_csv: Csv = False,
) -> None:
    """Time from a supplement's posting to each device running it (percentiles, seconds)."""
    rows = client().get("/patch-windows", per_device=per_device or None)
    columns: tuple[str, ...] = (
        ("device_id", "supplement_build", "posted_at", "installed_at", "seconds")
        if per_device
        else ("platform", "supplement", "build", "devices", "seconds", "restart_pending", "unknown")
    )
    emit(rows, rows, columns, as_json=as_json, as_csv=as_csv)


@admin_app.command("security-events")
@reporting
def security_events(
    limit: Annotated[int, typer.Option(min=1, max=MAX_PAGE, help="At most this many.")] = 100,
    as_json: Json = False,
    as_csv: Csv = False,
) -> None:
    """Security events, newest first: refused impersonation attempts and their source."""
    rows = client().get("/security-events", limit=limit)
    emit(
        rows,
        rows,
        ("at", "kind", "enrollment_id", "source", "detail"),
        as_json=as_json,
        as_csv=as_csv,
    )


# -- enrollment, keys, groups -----------------------------------------------


@admin_app.command("enrollment-token")
@reporting
def enrollment_token(
    group: Annotated[
        str, typer.Option(help="Devices enrolled with it join this group.")
    ] = "default",
    expires_in_hours: Annotated[
        float, typer.Option(help="Valid this long.", callback=_hours_within(MAX_TOKEN_HOURS))
    ] = 24.0,
    max_uses: Annotated[
        int | None, typer.Option(min=1, max=MAX_INT32, help="Devices it may enroll.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Create an enrollment token; a device spends it with 'bsi agent enroll'."""
    answer = client().post(
        "/enrollment-tokens",
        {"group": group, "expires_in_hours": expires_in_hours, "max_uses": max_uses},
    )
    if as_json:
        done(answer, True, "")
    else:
        sys.stdout.write(answer["token"] + "\n")
        err.print(f"[dim]group {group}, expires {answer['expires_at']}[/dim]")


@admin_app.command("api-key")
@reporting
def api_key(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by.")],
    role: Annotated[str, typer.Option(help="admin or read-only")] = "read-only",
    as_json: Json = False,
) -> None:
    """Create an API key and print it once (the server keeps only its hash)."""
    answer = client().post("/api-keys", {"name": name, "role": role})
    if as_json:
        done(answer, True, "")
    else:
        sys.stdout.write(answer["key"] + "\n")


@groups_app.command("list")
@reporting
def groups_list(as_json: Json = False, as_csv: Csv = False) -> None:
    """Every device group."""
    names = client().get("/groups")
    emit(names, [{"group": n} for n in names], ("group",), as_json=as_json, as_csv=as_csv)


@groups_app.command("create")
@reporting
def groups_create(name: str) -> None:
    """Create a device group (1-32 of a-z 0-9 . _ -)."""
    client().post("/groups", {"name": name})
    out.print(f"group {name} exists")


# -- declarations -------------------------------------------------------------


@declarations_app.command("list")
@reporting
def declarations_list(as_json: Json = False, as_csv: Csv = False) -> None:
    """Declarations and the groups they are assigned to."""
    rows = client().get("/declarations")
    emit(
        rows, rows, ("Identifier", "Type", "ServerToken", "groups"), as_json=as_json, as_csv=as_csv
    )


@declarations_app.command("put")
@reporting
def declarations_put(
    path: Annotated[Path, typer.Argument(help="A DDM declaration as JSON.")],
    as_json: Json = False,
) -> None:
    """Create or replace a declaration (checked against Apple's schema by the server)."""
    raw = read_file(path)
    document = read_json(raw, source=str(path), unique_keys=True)  # as read_document reads it
    identifier = document.get("Identifier") if isinstance(document, dict) else None
    if not isinstance(identifier, str) or not identifier:
        raise InvalidInput(f"{path} is not a declaration with an Identifier")
    answer = client().call(
        "PUT",
        f"/declarations/{segment(identifier)}",
        content=raw,
        content_type="application/json",
    )
    done(answer, as_json, f"declaration {identifier} stored (ServerToken {answer['ServerToken']})")


@declarations_app.command("delete")
@reporting
def declarations_delete(identifier: str) -> None:
    """Delete a declaration."""
    client().call("DELETE", f"/declarations/{segment(identifier)}")
    out.print(f"deleted {identifier}")


@declarations_app.command("assign")
@reporting
def declarations_assign(identifier: str, group: str) -> None:
    """Serve a declaration to a group's devices."""
    client().call("PUT", f"/declarations/{segment(identifier)}/groups/{segment(group)}")
    out.print(f"{identifier} assigned to {group}")


@declarations_app.command("unassign")
@reporting
def declarations_unassign(identifier: str, group: str) -> None:
    """Stop serving a declaration to a group's devices."""
    client().call("DELETE", f"/declarations/{segment(identifier)}/groups/{segment(group)}")
    out.print(f"{identifier} no longer assigned to {group}")


# -- catalogue and decisions -----------------------------------------------------


@catalog_app.command("import")
@reporting
def catalog_import(
    path: Annotated[
        Path, typer.Argument(help="GDMF, SOFA or bsi catalogue (JSON), or SOFA's NDJSON history.")
    ],
    source: Annotated[str, typer.Option(help="A name for where it came from.")] = "upload",
    as_json: Json = False,
) -> None:
    """Merge a catalogue document into the server's (refused whole when broken)."""
    answer = upload("/catalog", path, source=source)
    done(
        answer,
        as_json,
        f"imported {answer['imported_supplements']} supplement(s); the server knows "
        f"{answer['supplements']} supplement(s) and {answer['releases']} release(s)",
    )


@catalog_app.command("export")
@reporting
def catalog_export() -> None:
    """The whole catalogue as a bsi catalogue document (JSON)."""
    sys.stdout.write(json.dumps(client().get("/catalog"), indent=2) + "\n")


@catalog_app.command("sync-repository")
@reporting
def catalog_sync() -> None:
    """Make the server re-read the TUF repository it hosts now."""
    answer = client().post("/catalog/sync-repository")
    out.print(f"the server lists {answer['supplements']} supplement(s)")


@admin_app.command("recompute")
@reporting
def recompute() -> None:
    """Decide again for every device, now."""
    answer = client().post("/decisions/recompute")
    out.print(f"decided for {answer['devices']} device(s)")


@admin_app.command("recomputing")
@reporting
def recomputing(as_json: Json = False) -> None:
    """The decision pass under way on the server (decisions follow a change in the
    background, only for the devices it can affect)."""
    answer = client().get("/decisions/recompute")
    found = answer["recomputing"]
    if as_json:
        done(answer, as_json, "")
    elif found is None:
        out.print("no decision pass under way")
    elif "devices_left" not in found:
        out.print(f"deciding again soon for {found['affects']}")
    else:
        out.print(
            f"deciding again for {found['affects']}: {found['devices_left']:,} of "
            f"{found['devices']:,} device(s) left (started {found['started_at']})"
            + ("; another change waits for the next pass" if found["queued"] else "")
        )


@admin_app.command("wake")
@reporting
def wake() -> None:
    """Tell every device waiting on the long poll to check in now."""
    client().post("/wake")
    out.print("devices woken")


# rollouts, plans, windows, webhooks and the event history: their own module, registered here
from bsi.commands import admin_rollouts  # noqa: E402, F401
