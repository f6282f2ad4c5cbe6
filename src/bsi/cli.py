"""The ``bsi`` command: one entry point, subcommands per job.

This is the CLI adapter: it parses arguments, calls the application code and
turns every :class:`~bsi.errors.BsiError` into a message on stderr and exit
code 2. Nothing below it prints or exits.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bsi import __version__
from bsi.apple import sample
from bsi.apple.compliance import assess_apple_fleet, render_table, report_to_csv, report_to_json
from bsi.apple.fleet import InventoryFormat, load_declarations, load_fleet
from bsi.commands.admin import admin_app
from bsi.commands.agent import agent_app
from bsi.commands.arguments import MAX_PORT, MAX_WORKERS
from bsi.commands.demo import demo_command, sim_command
from bsi.commands.supplements import keys_app, supplement_app
from bsi.domain.declarations import effective_policy
from bsi.errors import BsiError, InvalidInput
from bsi.feeds.load import load_catalogs

app = typer.Typer(
    name="bsi",
    help="Background Security Improvements for any fleet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
apple_app = typer.Typer(
    help="Apple fleets: Apple's BSI catalogue and DDM status reports.", no_args_is_help=True
)
app.add_typer(apple_app, name="apple")
db_app = typer.Typer(help="The server's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
api_key_app = typer.Typer(help="Admin API keys.", no_args_is_help=True)
app.add_typer(api_key_app, name="api-key")
app.add_typer(keys_app, name="keys")
app.add_typer(supplement_app, name="supplement")
app.add_typer(agent_app, name="agent")
app.add_typer(admin_app, name="admin")
app.command("sim")(sim_command)
app.command("demo")(demo_command)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="BSI_DATABASE_URL",
        help="postgresql+psycopg://user:pass@host/db or sqlite:///path. "
        "Default: the SQLite file in --data-dir.",
    ),
]
DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="BSI_DATA_DIR",
        help="Where the embedded default keeps its database and first admin key.",
    ),
]


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def parse_instant(text: str | None) -> datetime:
    """``--at``: an ISO date or date-time; without a zone it is UTC."""
    if text is None:
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError as error:
        raise InvalidInput(
            f"{text!r} is not a date or date-time",
            hint="use ISO 8601, e.g. 2026-03-20 or 2026-03-20T12:00:00Z",
        ) from error
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print bsi's version.")] = False,
) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit


@apple_app.command("compliance")
def apple_compliance(
    catalog: Annotated[
        list[str] | None,
        typer.Option(
            "--catalog",
            "-c",
            help="Catalogue: a file or http(s) URL of Apple's GDMF document, a SOFA v2 "
            "feed or a bsi catalogue. Repeat to merge several.",
        ),
    ] = None,
    reports: Annotated[
        Path | None,
        typer.Option(
            "--reports",
            "-r",
            help="The fleet's inventory: a folder of <device-id>.json (or .plist) files, or "
            "an NDJSON file; DDM status reports, MDM DeviceInformation results or osquery "
            "rows (os_version joined with system_info), detected per record.",
        ),
    ] = None,
    reports_format: Annotated[
        InventoryFormat,
        typer.Option(
            "--reports-format",
            help="Name the inventory format instead of detecting it per record.",
        ),
    ] = InventoryFormat.AUTO,
    declarations: Annotated[
        Path | None,
        typer.Option(
            "--declarations",
            "-d",
            help="Declarations that apply to every device (a folder of JSON files or one "
            "file): softwareupdate.settings and enforcement.specific steer the decisions. "
            "Without them Apple's defaults apply.",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="Decide as of this instant (ISO 8601; UTC when no zone). Default: now."
        ),
    ] = None,
    use_sample: Annotated[
        bool,
        typer.Option(
            "--sample",
            help="Use the sample catalogue and fleet shipped with bsi, "
            f"as of {sample.AS_OF:%Y-%m-%d}.",
        ),
    ] = False,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.TABLE,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Same as --format csv.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="List devices with unreadable reports instead of refusing the whole input.",
        ),
    ] = False,
) -> None:
    """Which devices run which Background Security Improvement, which cannot get it, and why.

    Prints one row per device (OS, build, installed supplement, decision and its
    reason; unknown where bsi cannot place the device), a summary per supplement
    (installed / pending / restart pending / blocked by reason / unknown) and per
    CVE the devices exposed, unknown, restart pending and fixed.
    """
    if as_json and as_csv:
        raise InvalidInput("--json and --csv are exclusive")
    chosen = OutputFormat.JSON if as_json else OutputFormat.CSV if as_csv else output_format
    if use_sample:
        the_catalog = sample.catalog()
        fleet = load_fleet(
            reports or sample.fleet_path(), skip_invalid=skip_invalid, form=reports_format
        )
        now = parse_instant(at) if at else sample.AS_OF
    else:
        if not catalog or reports is None:
            raise InvalidInput(
                "--catalog and --reports are required",
                hint="or pass --sample to see the report on bsi's sample fleet",
            )
        the_catalog = load_catalogs(catalog)
        fleet = load_fleet(reports, skip_invalid=skip_invalid, form=reports_format)
        now = parse_instant(at)
    policy = effective_policy(load_declarations(declarations) if declarations else [])
    report, unreadable = assess_apple_fleet(fleet, the_catalog, policy, now)

    if chosen is OutputFormat.TABLE:
        console = Console(file=output.open("w", encoding="utf-8") if output else None, width=160)
        render_table(report, unreadable, console)
        return
    if chosen is OutputFormat.JSON:
        text = json.dumps(report_to_json(report, unreadable), indent=2) + "\n"
    else:
        text = report_to_csv(report)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


@app.command("serve")
def serve(
    data_dir: DataDir = Path("bsi-data"),
    database_url: DatabaseUrl = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=MAX_PORT, help="Port to listen on.")] = 8080,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            help="Server processes (they share nothing but the database).",
        ),
    ] = 1,
    nanomdm_hmac_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Accept NanoMDM -dm forwarding signed with this key: the file holds the "
            "string of NanoMDM's -dm-send-hmac-key (one final newline ignored). Responses "
            "are signed with it too, for -dm-recv-hmac-key."
        ),
    ] = None,
    nanomdm_response_hmac_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Sign DDM responses with this key instead: the string of NanoMDM's "
            "-dm-recv-hmac-key, when it differs from -dm-send-hmac-key."
        ),
    ] = None,
    nanomdm_webhook_hmac_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Accept NanoMDM's webhook events (-webhook-url http://bsi/v1/nanomdm/webhook) "
            "signed with this key: the string of NanoMDM's -webhook-hmac-key."
        ),
    ] = None,
    nanomdm_allow_unsigned_from: Annotated[
        list[str] | None,
        typer.Option(
            help="Accept unsigned NanoMDM requests (DDM and webhook) from this address or "
            "network only (repeatable), for NanoMDM run without HMAC keys."
        ),
    ] = None,
    max_body_bytes: Annotated[
        int,
        typer.Option(min=1024, max=1 << 30, help="Refuse request bodies larger than this."),
    ] = 1024 * 1024,
    tuf_repo_dir: Annotated[
        Path | None,
        typer.Option(help="Serve this TUF repository at /tuf/metadata/ and /tuf/targets/."),
    ] = None,
    tuf_keys_dir: Annotated[
        Path | None,
        typer.Option(help="Its online snapshot/timestamp keys: keep the timestamp fresh."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Run the bsi server: DDM endpoints for devices, enrollment, and the admin API.

    With no --database-url it keeps a SQLite database in --data-dir, creating
    and migrating it on first start, and writes the first admin API key to
    <data-dir>/admin-api-key. OpenAPI docs are served at /docs.
    """
    import uvicorn

    from bsi.server.app import ADMIN_KEY_FILE, ServerSettings, prepare
    from bsi.server.nanomdm import networks, read_key_file

    settings = ServerSettings(
        data_dir=data_dir,
        database_url=database_url,
        nanomdm_hmac_key=read_key_file(nanomdm_hmac_key_file) if nanomdm_hmac_key_file else None,
        nanomdm_response_hmac_key=read_key_file(nanomdm_response_hmac_key_file)
        if nanomdm_response_hmac_key_file
        else None,
        nanomdm_webhook_hmac_key=read_key_file(nanomdm_webhook_hmac_key_file)
        if nanomdm_webhook_hmac_key_file
        else None,
        nanomdm_unsigned_from=networks(nanomdm_allow_unsigned_from or ()),
        max_body_bytes=max_body_bytes,
        tuf_repo_dir=tuf_repo_dir,
        tuf_keys_dir=tuf_keys_dir,
    )
    prepare(settings)  # migrate and bootstrap once, before any worker starts
    environment = {
        "BSI_DATA_DIR": str(data_dir.resolve()),
        "BSI_DATABASE_URL": database_url or "",
        "BSI_NANOMDM_HMAC_KEY_FILE": str(nanomdm_hmac_key_file or ""),
        "BSI_NANOMDM_RESPONSE_HMAC_KEY_FILE": str(nanomdm_response_hmac_key_file or ""),
        "BSI_NANOMDM_WEBHOOK_HMAC_KEY_FILE": str(nanomdm_webhook_hmac_key_file or ""),
        "BSI_NANOMDM_ALLOW_UNSIGNED_FROM": ",".join(nanomdm_allow_unsigned_from or ()),
        "BSI_MAX_BODY_BYTES": str(max_body_bytes),
        "BSI_TUF_REPO_DIR": str(tuf_repo_dir.resolve()) if tuf_repo_dir else "",
        "BSI_TUF_KEYS_DIR": str(tuf_keys_dir.resolve()) if tuf_keys_dir else "",
        # Workers stop when this process does, even if it is SIGKILLed.
        "BSI_SUPERVISOR_PID": str(os.getpid()) if workers > 1 else "",
    }
    os.environ.update(environment)
    console = Console(stderr=True)
    console.print(f"bsi {__version__} serving on http://{host}:{port} (API docs: /docs)")
    if settings.embedded:
        console.print(f"data: {settings.resolved_database_url()}")
        console.print(f"admin API key: {data_dir / ADMIN_KEY_FILE}")
    uvicorn.run(
        "bsi.server.asgi:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,  # open wake-up long polls must not hold a stop
    )


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = Path("bsi-data"), database_url: DatabaseUrl = None) -> None:
    """Create or migrate the database schema to this bsi's version (Alembic)."""
    from bsi.server.app import ServerSettings
    from bsi.store.database import open_engine, upgrade

    settings = ServerSettings(data_dir=data_dir, database_url=database_url)
    if settings.embedded:
        data_dir.mkdir(parents=True, exist_ok=True)
    revision = upgrade(open_engine(settings.resolved_database_url()))
    typer.echo(f"database at revision {revision}")


@api_key_app.command("create")
def api_key_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by.")],
    role: Annotated[str, typer.Option(help="admin or read-only")] = "read-only",
    data_dir: DataDir = Path("bsi-data"),
    database_url: DatabaseUrl = None,
) -> None:
    """Create an admin API key and print it (it is stored only as a hash)."""
    from bsi.server.app import ServerSettings, utc_now
    from bsi.store.database import open_engine, require_current_schema
    from bsi.store.store import Store

    settings = ServerSettings(data_dir=data_dir, database_url=database_url)
    engine = open_engine(settings.resolved_database_url())
    require_current_schema(engine)
    typer.echo(Store(engine).create_api_key(name, role, utc_now()))


@app.command(
    "tuf-client",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def tuf_client(context: typer.Context) -> None:
    """The TUF conformance suite's client CLI (init / refresh / download; exit 0 or 1).

    Run 'bsi tuf-client --help' for its options.
    """
    from bsi.trust.conformance_client import tuf_client_main

    raise typer.Exit(tuf_client_main(context.args))


def main() -> None:
    """Console-script entry: run the app, turning bsi's errors into exit code 2."""
    try:
        app()
    except OSError as error:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {escape(str(error))}", highlight=False
        )
        sys.exit(2)
    except BsiError as error:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error:[/red] {escape(str(error))}", highlight=False
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
