"""Numeric command-line arguments are bounded and finite: a value out of range, NaN or
infinity, or a digit Python reads but ``int`` does not, exits 2 with a usage message
naming the option and the range — never a traceback, never a run on a value nothing holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from running import run_bsi


def bsi(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_bsi(*args, env={"COLUMNS": "300"}, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "70000"], "'--port': Input should be less than or equal to 65535"),
        (
            ["serve", "--workers", "100000"],
            "'--workers': Input should be less than or equal to 256",
        ),
        (["serve", "--max-body-bytes", "9" * 30], "less than or equal to 1073741824"),
        (["agent", "run", "--interval", "nan"], "'--interval': Input should be"),
        (["agent", "run", "--interval", "inf"], "'--interval': Input should be less than"),
        (
            ["agent", "run", "--cycles", "0"],
            "'--cycles': Input should be greater than or equal to 1",
        ),
        (["demo", "--port", "-1"], "'--port': Input should be greater than or equal to 0"),
        (["demo", "--offline-seconds", "-inf"], "greater than or equal to -604800"),
        (["demo", "--devices", "1" + "0" * 12], "less than or equal to 100000"),
        (["keys", "init", "--threshold", "root=\N{SUPERSCRIPT TWO}"], "root='²' is not a whole"),
        (["keys", "init", "--threshold", "root=" + "9" * 5000], "root='999"),
        (["keys", "init", "--threshold", "root=65"], "root=65 is out of range (between 1 and 64)"),
    ],
)
def test_a_numeric_argument_out_of_range_exits_2_naming_it(
    tmp_path: Path, args: list[str], message: str
) -> None:
    if args[:2] == ["keys", "init"]:
        args = [*args, "--keys-dir", str(tmp_path / "k"), "--repo-dir", str(tmp_path / "r")]
    result = bsi(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (b"k" * 65, "the API key's name is 65 characters long; the limit is 64"),
        (b"ops-\xff", "the API key's name contains a lone surrogate"),  # not UTF-8 in argv
    ],
)
def test_a_text_argument_no_column_can_hold_is_refused_and_nothing_stored(
    tmp_path: Path, name: bytes, message: str
) -> None:
    data = tmp_path / "data"
    assert bsi("db", "upgrade", "--data-dir", data).returncode == 0
    command = [sys.executable, "-m", "bsi", "api-key", "create", name, "--data-dir", data]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    again = bsi("api-key", "create", "k" * 64, "--data-dir", data)
    assert again.returncode == 0, again.stderr
