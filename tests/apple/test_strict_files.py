"""Files given to ``bsi apple compliance`` are read by the one strict reader: a NaN, a
5,000-digit number, a NUL or a lone surrogate is refused naming the file and the JSON path
(or line), and exits 2 without a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bsi.apple.fleet import load_declarations, load_fleet
from bsi.apple.sample import fleet_path
from bsi.domain.declarations import software_update_settings
from bsi.errors import FeedError, InvalidInput
from bsi.feeds.load import load_catalog
from reports import macos_report
from running import run_bsi

SAMPLE_CATALOG = Path(__file__).parents[2] / "src" / "bsi" / "data" / "sample-catalog.json"


def bsi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_bsi(*args, timeout=60)


def report_with(raw: str) -> str:
    """A DDM report whose ``StatusItems.vendor.x`` is written as ``raw`` JSON text."""
    report = macos_report()
    report["StatusItems"]["vendor"] = {"x": "{RAW}"}
    return json.dumps(report).replace('"{RAW}"', raw)


BAD_VALUES = [
    ("NaN", "NaN is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"),
    ("1e400", "inf is not a finite number"),
    ("9" * 5000, "number 999999999999999999999999... is out of range"),
    ('"\\ud83d"', "a string contains a lone surrogate"),
    ('"a\\u0000"', "a string contains a NUL character"),
    ('"' + "x" * 70_000 + '"', "a string is 70000 characters long; the limit is 65536"),
]


@pytest.mark.parametrize(("raw", "problem"), BAD_VALUES)
def test_a_report_file_with_a_value_nothing_can_hold_is_refused(
    tmp_path: Path, raw: str, problem: str
) -> None:
    (tmp_path / "mac-1.json").write_text(report_with(raw))
    with pytest.raises(InvalidInput) as refused:
        load_fleet(tmp_path)
    assert f"{tmp_path / 'mac-1.json'}: StatusItems.vendor.x: {problem}" in str(refused.value)
    skipped = load_fleet(tmp_path, skip_invalid=True)
    assert skipped.states == {}
    assert [u.device_id for u in skipped.unreadable] == ["mac-1"]


def test_an_ndjson_report_line_is_refused_by_its_line(tmp_path: Path) -> None:
    good = json.dumps({"device_id": "m1", "report": macos_report()})
    bad = json.dumps({"device_id": "m2", "report": macos_report(), "n": "{RAW}"})
    (tmp_path / "fleet.ndjson").write_text(good + "\n" + bad.replace('"{RAW}"', "9" * 5000) + "\n")
    with pytest.raises(InvalidInput, match=r"fleet.ndjson:2: n: number 9+\.\.\. is out of range"):
        load_fleet(tmp_path / "fleet.ndjson")


@pytest.mark.parametrize(("raw", "problem"), BAD_VALUES[:4])
def test_a_catalogue_feed_with_a_bad_number_is_refused_whole(
    tmp_path: Path, raw: str, problem: str
) -> None:
    document = json.loads(SAMPLE_CATALOG.read_text())
    document["releases"][0]["size"] = "{RAW}"
    feed = tmp_path / "feed.json"
    feed.write_text(json.dumps(document).replace('"{RAW}"', raw))
    with pytest.raises(FeedError) as refused:
        load_catalog(feed)
    assert f"{feed}: releases[0].size: {problem}" in str(refused.value)


def test_a_declaration_file_with_a_lone_surrogate_is_refused(tmp_path: Path) -> None:
    text = json.dumps(software_update_settings("x").to_json())
    (tmp_path / "d.json").write_text(text.replace('"x"', '"x\\udfff"', 1))
    with pytest.raises(InvalidInput, match=r"d\.json: Identifier: a string contains a lone"):
        load_declarations(tmp_path)


def test_the_command_exits_2_naming_file_and_path(tmp_path: Path) -> None:
    for report in fleet_path().glob("*.json"):
        (tmp_path / report.name).write_text(report.read_text())
    (tmp_path / "mac-9.json").write_text(report_with("NaN"))
    result = bsi("apple", "compliance", "--sample", "--reports", tmp_path)
    assert result.returncode == 2
    assert "mac-9.json: StatusItems.vendor.x: NaN is not a JSON number" in result.stderr
    assert "Traceback" not in result.stderr
