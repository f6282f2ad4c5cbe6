"""``bsi apple``: Apple fleets, from Apple's BSI catalogue and the fleet's inventory.

Loaded by :mod:`bsi.cli` only when ``bsi apple`` is asked for.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bsi.apple import sample
from bsi.apple.compliance import assess_apple_fleet, render_table, report_to_csv, report_to_json
from bsi.apple.fleet import InventoryFormat, load_declarations, load_fleet
from bsi.domain.declarations import effective_policy
from bsi.errors import InvalidInput
from bsi.feeds.load import load_catalogs

apple_app = typer.Typer(
    help="Apple fleets: Apple's BSI catalogue and DDM status reports.", no_args_is_help=True
)


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
        if catalog:  # the sample fleet is decided against the sample's own catalogue
            raise InvalidInput(
                "--sample and --catalog are exclusive",
                hint="--sample uses the sample catalogue; leave out --sample to use yours",
            )
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
