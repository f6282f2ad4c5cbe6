"""``bsi apple compliance`` end to end: the real command in a subprocess, real files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bsi.apple.sample import fleet_path
from bsi.domain.declarations import software_update_settings
from bsi.domain.status import nest_status_items
from reports import macos_report
from running import run_bsi
from server_support import image_catalog


def bsi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_bsi(*args)


def as_json(*args: str | Path) -> dict[str, Any]:
    result = bsi(*args, "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def by_device(document: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {row["device_id"]: row for row in document["devices"]}


def test_sample_table_answers_who_has_what_and_why() -> None:
    result = bsi("apple", "compliance", "--sample")
    assert result.returncode == 0, result.stderr
    for expected in (
        "Devices as of 2026-03-20",
        "mbp-m1-dev02",
        "supplement-installed",
        "not-latest-minor",
        "install macOS 26.3.1 (25D2128) first",
        "below-minimum-version",
        "CVE-2026-20643",
    ):
        assert expected in result.stdout


def test_sample_json_has_devices_supplements_and_cves() -> None:
    document = as_json("apple", "compliance", "--sample")
    devices = by_device(document)
    assert devices["mbair-m2-ops01"]["target_build"] == "25D771280a"
    assert devices["macbook-neo-03"]["target_supplement"] == "26.3.2 (a)"
    assert devices["iphone13-06"]["target_build"] == "23D771330a"
    assert devices["macstudio-09"]["outcome"] == "install"  # matched by model identifier
    assert devices["ipad-08"]["reason"] == "below-minimum-version"
    # installed by a partial report that followed the full one
    assert devices["mbp-m1-dev02"]["supplement"] == "26.3.1 (a)"
    macos_a = next(s for s in document["supplements"] if s["build"] == "25D771280a")
    assert (macos_a["installed"], macos_a["pending"]) == (1, 2)
    assert (macos_a["blocked"], macos_a["blocked_by_reason"]) == (1, {"not-latest-minor": 1})
    (cve,) = document["cves"]
    assert cve["cve"] == "CVE-2026-20643"
    assert len(cve["exposed_devices"]) == cve["exposed"] == 4


def test_sample_csv_has_one_row_per_device(tmp_path: Path) -> None:
    out = tmp_path / "report.csv"
    result = bsi("apple", "compliance", "--sample", "--csv", "--output", out)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == len(list(fleet_path().glob("*.json")))
    assert {"device_id", "outcome", "reason", "target_build", "message"} <= set(rows[0])


def test_moving_the_clock_past_26_4_blocks_the_old_minor() -> None:
    devices = by_device(as_json("apple", "compliance", "--sample", "--at", "2026-04-01"))
    assert devices["mbair-m2-ops01"]["reason"] == "not-latest-minor"
    assert devices["mbair-m2-ops01"]["install_first"].startswith("macOS 26.4")


def test_real_catalogue_and_a_folder_of_reports(real_catalogue: list[str], tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "air.json").write_text(json.dumps(macos_report("26.3.1", "25D2128", "J413AP")))
    (reports / "neo.json").write_text(json.dumps(macos_report("26.3.2", "25D2140", "J700AP")))
    document = as_json(
        "apple", "compliance", *real_catalogue, "--reports", reports, "--at", "2026-03-20"
    )
    devices = by_device(document)
    assert devices["air"]["target_build"] == "25D771280a"
    assert devices["neo"]["target_build"] == "25D771400a"


def test_ndjson_reports_merge_in_order_per_device(
    real_catalogue: list[str], tmp_path: Path
) -> None:
    partial = {
        "StatusItems": {
            "device": {"operating-system": {"supplemental": {"build-version": "25D771280a"}}}
        }
    }
    lines = [
        {"device_id": "air", "report": macos_report("26.3.1", "25D2128", "J413AP")},
        {"device_id": "other", "report": macos_report("26.3.1", "25D2128", "J413AP")},
        {"device_id": "air", "report": partial},
    ]
    ndjson = tmp_path / "reports.ndjson"
    ndjson.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    devices = by_device(
        as_json("apple", "compliance", *real_catalogue, "-r", ndjson, "--at", "2026-03-20")
    )
    assert devices["air"]["reason"] == "supplement-installed"
    assert devices["other"]["outcome"] == "install"


def test_declarations_steer_the_decisions(tmp_path: Path) -> None:
    declaration = software_update_settings("no-bsi", install_security_update="AlwaysOff")
    (tmp_path / "settings.json").write_text(json.dumps(declaration.to_json()))
    devices = by_device(as_json("apple", "compliance", "--sample", "-d", tmp_path))
    assert devices["mbair-m2-ops01"]["reason"] == "policy-always-off"
    # InstallSecurityUpdate does not apply on iOS
    assert devices["iphone13-06"]["reason"] == "offered-to-user"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "next tuesday"], "'next tuesday' is not a date"),
        (["--json", "--csv"], "exclusive"),
        (["--reports", "/nonexistent/reports"], "no status reports at /nonexistent/reports"),
        (["--catalog", "missing.json"], "--sample and --catalog are exclusive"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = bsi("apple", "compliance", "--sample", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_catalogue_and_reports_are_required_without_sample() -> None:
    result = bsi("apple", "compliance")
    assert result.returncode == 2
    assert "--catalog and --reports are required" in result.stderr
    assert "--sample" in result.stderr


def test_invalid_declaration_is_refused_naming_the_file_and_key(tmp_path: Path) -> None:
    bad = software_update_settings("x").to_json()
    bad["Payload"] = {"RapidSecurityResponse": {"Enable": "yes"}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = bsi("apple", "compliance", "--sample", "-d", tmp_path)
    assert result.returncode == 2
    assert "bad.json" in result.stderr
    assert "Payload.RapidSecurityResponse.Enable" in result.stderr


def test_a_broken_report_refuses_the_input_unless_told_to_skip(tmp_path: Path) -> None:
    for report in fleet_path().glob("*.json"):
        (tmp_path / report.name).write_text(report.read_text())
    (tmp_path / "broken.json").write_text('{"StatusItems": {"device": {"operating-system": ')
    (tmp_path / "bad-build.json").write_text(json.dumps(macos_report("26.3.1", "not a build", "X")))

    refused = bsi("apple", "compliance", "--sample", "--reports", tmp_path)
    assert refused.returncode == 2
    assert "bad-build.json" in refused.stderr
    assert "--skip-invalid" in refused.stderr

    document = as_json("apple", "compliance", "--sample", "--reports", tmp_path, "--skip-invalid")
    unreadable = {item["device_id"]: item["error"] for item in document["unreadable"]}
    assert set(unreadable) == {"broken", "bad-build"}
    assert "'not a build'" in unreadable["bad-build"]
    assert "mbair-m2-ops01" in by_device(document)


def test_a_broken_catalogue_is_refused_whole(tmp_path: Path) -> None:
    feed = tmp_path / "gdmf.json"
    feed.write_text(json.dumps({"PublicBackgroundSecurityImprovements": {"macOS": [{"x": 1}]}}))
    result = bsi("apple", "compliance", "-c", feed, "-r", fleet_path())
    assert result.returncode == 2
    assert "gdmf.json" in result.stderr


def test_help_explains_the_inputs() -> None:
    result = bsi("apple", "compliance", "--help")
    assert result.returncode == 0
    for word in ("--catalog", "GDMF", "SOFA", "--reports", "NDJSON", "--declarations", "--at"):
        assert word in result.stdout


def test_the_offline_report_counts_a_container_hosts_containers(tmp_path: Path) -> None:
    base, patched, foreign = ("sha256:" + h * 32 for h in ("5f", "a1", "0a"))
    catalogue = tmp_path / "catalog.json"
    catalogue.write_text(json.dumps(image_catalog("12C1000a", base, ("CVE-2026-0001",))))
    containers = [
        {"name": "web1", "image": patched, "base_image": base,
         "supplemental_build": "12C1000a", "extra_version": "(a)"},
        {"name": "web2", "image": base, "base_image": base},
        {"name": "db", "image": foreign, "base_image": foreign},
    ]  # fmt: skip
    items = {
        "device.operating-system.family": "debian",
        "device.operating-system.version": "12",
        "bsi.agent.package-manager": "dpkg",
        "bsi.agent.packages": [{"package": "libc6", "version": "2.36-9+deb12u9"}],
        "bsi.agent.containers": containers,
    }
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "docker1.json").write_text(
        json.dumps({"StatusItems": nest_status_items(items), "Errors": []})
    )
    document = as_json("apple", "compliance", "--catalog", catalogue, "--reports", reports)
    (row,) = document["supplements"]
    assert (row["containers_affected"], row["containers_installed"]) == (2, 1)
    assert (row["containers_pending"], row["containers_unknown"]) == (1, 0)
    (cve,) = document["cves"]
    assert (cve["containers_exposed"], cve["containers_fixed"]) == (1, 1)
    table = bsi("apple", "compliance", "--catalog", catalogue, "--reports", reports)
    assert table.returncode == 0, table.stderr
    # the tables print 160 columns wide: each cell starts on one line
    assert "┃ containers" in table.stdout
    assert "│ image " in table.stdout  # the prerequisite, never "None"
    assert "│ sha256:5f5f5f5f5f5f " in table.stdout
    assert "│ 2 affected: 1 " in table.stdout
    assert "│ 1 exposed, 0 unknown, 0" in table.stdout
