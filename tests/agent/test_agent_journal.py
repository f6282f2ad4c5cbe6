"""The journal file, and what :mod:`bsi.agent.swap_plan` reads into it.

The file tests write real journals and damage them the ways a crash (or a
disk) can; the plan tests replay record sequences through ``interpret`` and
check the rule: committed means forward, anything less means back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bsi.agent.journal import (
    CrashHook,
    CrashPoint,
    Journal,
    JournalCorrupt,
    Record,
    decode_line,
    encode_line,
    parse_journal,
)
from bsi.agent.swap_plan import (
    Direction,
    EndOutcome,
    Operation,
    Plan,
    StepKind,
    backup_path,
    begin_record,
    checkpoint_record,
    commit_record,
    done_record,
    end_record,
    expectations,
    intent_record,
    interpret,
    plan_activation,
    recover_record,
    temp_path,
)
from bsi.cryptex import Action, Component, FileEntry, Manifest
from bsi.domain.prerequisite import Prerequisite
from bsi.domain.versions import Build, ExtraVersion, ProductVersion
from bsi.errors import InvalidInput

RECORDS: list[Record] = [
    {"type": "begin", "txn": 1, "plan": {"nested": [1, "two", None, True]}},
    {"type": "intent", "txn": 1, "step": 0, "path": "usr/lib/é"},
    {"type": "end", "txn": 1, "active": None},
]


def journal_with(tmp_path: Path, records: list[Record]) -> Journal:
    journal = Journal(tmp_path / "journal")
    for record in records:
        journal.append(record)
    journal.close()
    return journal


# -- the file ------------------------------------------------------------------------


def test_records_round_trip(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, RECORDS)
    assert list(Journal(journal.path).read()) == RECORDS
    lines = journal.path.read_bytes().splitlines()
    assert [decode_line(line) for line in lines] == [(n, r) for n, r in enumerate(RECORDS, 1)]


def test_an_absent_journal_is_empty(tmp_path: Path) -> None:
    assert Journal(tmp_path / "none").read() == ()


def test_appending_continues_the_sequence(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, RECORDS[:2])
    assert Journal(journal.path).append(RECORDS[2]) == 3
    assert list(Journal(journal.path).read()) == RECORDS


@pytest.mark.parametrize("keep", [1, 10, -1])
def test_a_torn_last_line_is_ignored_and_cut_off_before_the_next_append(
    tmp_path: Path, keep: int
) -> None:
    journal = journal_with(tmp_path, RECORDS[:2])
    torn = encode_line(3, RECORDS[2])[:keep]  # never its newline
    with journal.path.open("ab") as file:
        file.write(torn)

    parsed = journal.parse()
    assert list(parsed.records) == RECORDS[:2]
    assert parsed.ignored == f"a torn last line of {len(torn)} bytes"

    appender = Journal(journal.path)
    assert appender.append(RECORDS[2]) == 3
    appender.close()
    assert list(Journal(journal.path).read()) == RECORDS
    assert journal.path.read_bytes().count(b"\n") == 3


def test_a_tail_of_zeros_is_a_torn_line(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, RECORDS)
    with journal.path.open("ab") as file:
        file.write(bytes(4096))
    assert list(journal.read()) == RECORDS


def test_a_last_line_whose_checksum_fails_is_ignored(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, RECORDS)
    data = journal.path.read_bytes()
    journal.path.write_bytes(data.replace(b'"active":null', b'"active":"x"'))
    parsed = journal.parse()
    assert list(parsed.records) == RECORDS[:2]
    assert parsed.ignored is not None
    assert parsed.ignored.startswith("an unreadable line")


def test_a_damaged_line_before_intact_ones_is_corruption(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, RECORDS)
    data = journal.path.read_bytes()
    journal.path.write_bytes(data.replace(b'"step":0', b'"step":1'))
    with pytest.raises(JournalCorrupt, match="followed by intact records"):
        journal.read()
    with pytest.raises(JournalCorrupt):
        Journal(journal.path).append({"type": "x"})


def test_a_missing_record_is_corruption(tmp_path: Path) -> None:
    lines = [encode_line(1, RECORDS[0]), encode_line(3, RECORDS[2])]
    with pytest.raises(JournalCorrupt, match="records are missing"):
        parse_journal(b"".join(lines))


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"record": {}, "seq": 1}',
        b'{"record": [], "seq": 1, "sha256": "00"}',
        b'{"record": {}, "seq": true, "sha256": "00"}',
    ],
)
def test_lines_that_are_not_records_do_not_decode(line: bytes) -> None:
    assert decode_line(line) is None


def test_reset_replaces_the_journal_whole(tmp_path: Path) -> None:
    journal = journal_with(tmp_path, RECORDS)
    journal.reset([{"type": "checkpoint"}])
    assert list(journal.read()) == [{"type": "checkpoint"}]
    assert journal.append({"type": "next"}) == 2
    journal.close()
    assert not list(journal.path.parent.glob(".journal.*"))  # no temporary left


def test_floats_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no floats"):
        Journal(tmp_path / "j").append({"type": "x", "value": 1.5})


@pytest.mark.parametrize(
    ("text", "point"),
    [
        ("3", CrashPoint("after", 3)),
        ("after:3", CrashPoint("after", 3)),
        ("before:1", CrashPoint("before", 1)),
        (" torn:12 ", CrashPoint("torn", 12)),
    ],
)
def test_crash_points_parse(text: str, point: CrashPoint) -> None:
    assert CrashPoint.parse(text) == point


@pytest.mark.parametrize("text", ["0", "x", "during:3", "after:", "-1"])
def test_bad_crash_points_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not a crash point"):
        CrashPoint.parse(text)


APPEND_THREE = """
import sys
from pathlib import Path
from bsi.agent.journal import CrashHook, CrashPoint, Journal
hook = CrashHook(CrashPoint.parse(sys.argv[2])) if len(sys.argv) > 2 else None
journal = Journal(Path(sys.argv[1]), crash=hook)
for n in range(3):
    journal.append({"type": "step", "n": n})
"""


@pytest.mark.parametrize(
    ("point", "intact", "torn"),
    [("1", 1, False), ("after:3", 3, False), ("before:2", 1, False), ("torn:2", 1, True)],
)
def test_the_crash_hook_kills_the_process_where_it_says(
    tmp_path: Path, point: str, intact: int, torn: bool
) -> None:
    path = tmp_path / "journal"
    ran = subprocess.run(
        [sys.executable, "-c", APPEND_THREE, str(path), point], check=False, capture_output=True
    )
    assert ran.returncode == -signal.SIGKILL
    parsed = Journal(path).parse()
    assert [r["n"] for r in parsed.records] == list(range(intact))
    assert (parsed.ignored is not None) == torn


def test_one_hook_counts_the_records_of_every_journal_it_is_given_to(tmp_path: Path) -> None:
    hook = CrashHook(CrashPoint.parse("after:9"))
    first, second = Journal(tmp_path / "a", crash=hook), Journal(tmp_path / "b", crash=hook)
    first.append({"type": "x"})
    second.append({"type": "y"})
    first.reset([{"type": "checkpoint"}])  # not appended: not counted
    assert hook.appended == 2


def test_a_journal_made_without_a_hook_ignores_the_old_environment_variable(
    tmp_path: Path,
) -> None:
    """Production journals never die on purpose, whatever the environment says."""
    path = tmp_path / "journal"
    ran = subprocess.run(
        [sys.executable, "-c", APPEND_THREE, str(path)],
        env={**os.environ, "BSI_CRASH_AT": "1"},
        check=False,
        capture_output=True,
    )
    assert ran.returncode == 0, ran.stderr
    assert [r["n"] for r in Journal(path).read()] == [0, 1, 2]


# -- plans ---------------------------------------------------------------------------

SHA = {name: (name * 64)[:64] for name in "abcdef"}


def manifest() -> Manifest:
    files = (
        FileEntry("usr/lib/new/deep/x.so", Action.ADD, SHA["a"], None, 3, 0o644, 0, 0),
        FileEntry("usr/lib/y.so", Action.ADD, SHA["b"], None, 3, 0o644, 0, 0),
        FileEntry("usr/lib/ssl.so", Action.CHANGE, SHA["c"], SHA["d"], 3, 0o755, 5, 6),
        FileEntry("usr/share/old", Action.REMOVE, base_sha256=SHA["e"]),
    )
    return Manifest(
        platform="debian",
        product_version=ProductVersion.parse("12.5"),
        extra_version=ExtraVersion.parse("(a)"),
        prerequisite=Prerequisite.of_build(Build.parse("12A100")),
        supplemental_build=Build.parse("12A100a"),
        components=(Component("openssl", files),),
    )


def activation() -> Plan:
    return plan_activation(manifest(), ["usr/lib/new/deep", "usr/lib/new"])


def test_an_activation_prepares_everything_before_it_applies_anything() -> None:
    plan = activation()
    assert plan.created_dirs == ("usr/lib/new", "usr/lib/new/deep")
    assert [(s.kind.value, s.path) for s in plan.steps] == [
        ("mkdir", "usr/lib/new"),
        ("mkdir", "usr/lib/new/deep"),
        ("stage", "usr/lib/new/deep/x.so"),
        ("stage", "usr/lib/ssl.so"),
        ("stage", "usr/lib/y.so"),
        ("backup", "usr/lib/ssl.so"),
        ("backup", "usr/share/old"),
        ("install", "usr/lib/new/deep/x.so"),
        ("install", "usr/lib/ssl.so"),
        ("install", "usr/lib/y.so"),
        ("delete", "usr/share/old"),
    ]
    assert [s.index for s in plan.steps] == list(range(11))


def test_a_deactivation_undoes_the_activation_in_reverse() -> None:
    plan = activation().reversed()
    assert plan.operation is Operation.DEACTIVATE
    assert [(s.kind.value, s.path) for s in plan.steps] == [
        ("restage", "usr/lib/ssl.so"),
        ("restage", "usr/share/old"),
        ("restore", "usr/lib/ssl.so"),
        ("restore", "usr/share/old"),
        ("unlink", "usr/lib/new/deep/x.so"),
        ("unlink", "usr/lib/y.so"),
        ("rmdir", "usr/lib/new/deep"),
        ("rmdir", "usr/lib/new"),
        ("discard", ""),
    ]


def test_only_directories_of_added_files_can_be_created() -> None:
    with pytest.raises(ValueError, match="not a directory of an added file"):
        plan_activation(manifest(), ["usr/share"])


def test_plans_round_trip_through_json() -> None:
    for plan in (activation(), activation().reversed()):
        assert Plan.from_json(plan.to_json()) == plan


def test_names_are_short_and_distinct() -> None:
    long_name = "usr/lib/" + "x" * 255
    new = temp_path("12A100a", long_name, Operation.ACTIVATE)
    old = temp_path("12A100a", long_name, Operation.DEACTIVATE)
    assert new.startswith("usr/lib/.bsi-12A100a-")
    assert new.endswith(".new")
    assert old.endswith(".old")
    assert len(new.rsplit("/", 1)[1]) < 64
    assert temp_path("12A100a", "top", Operation.ACTIVATE).count("/") == 0
    assert backup_path("12A100a", "usr/lib/y") == "rollback/12A100a/files/usr/lib/y"


def test_expectations_with_and_without_the_supplement() -> None:
    plan = activation()
    active = {e.path: (e.sha256, e.mode, e.uid) for e in expectations(plan, active=True)}
    baseline = {e.path: e.sha256 for e in expectations(plan, active=False)}
    assert active["usr/lib/ssl.so"] == (SHA["c"], 0o755, 5)
    assert active["usr/share/old"] == (None, None, None)
    assert baseline == {
        "usr/lib/new/deep/x.so": None,
        "usr/lib/y.so": None,
        "usr/lib/ssl.so": SHA["d"],
        "usr/share/old": SHA["e"],
    }


# -- reading journals ------------------------------------------------------------------


def records_until(plan: Plan, *, steps_done: int, commit: bool, txn: int = 1) -> list[Record]:
    records: list[Record] = [begin_record(txn, plan)]
    for step in plan.prepare_steps[:steps_done]:
        records += [intent_record(txn, step), done_record(txn, step)]
    if commit:
        records.append(commit_record(txn))
    return records


def test_an_empty_journal_means_the_baseline() -> None:
    state = interpret([])
    assert (state.active, state.pending, state.last_txn) == (None, None, 0)


def test_a_transaction_without_commit_is_rolled_back() -> None:
    plan = activation()
    records = records_until(plan, steps_done=3, commit=False)
    records.append(intent_record(1, plan.steps[3]))
    pending = interpret(records).pending
    assert pending is not None
    assert pending.direction is Direction.BACK
    assert pending.resulting_active is None
    # Undo what was begun, the half-done step included, last first.
    assert [s.index for s in pending.recovery_steps()] == [3, 2, 1, 0]


def test_a_committed_transaction_is_rolled_forward() -> None:
    plan = activation()
    records = records_until(plan, steps_done=len(plan.prepare_steps), commit=True)
    first_apply = plan.apply_steps[0]
    records += [intent_record(1, first_apply), done_record(1, first_apply)]
    records.append(intent_record(1, plan.apply_steps[1]))
    pending = interpret(records).pending
    assert pending is not None
    assert pending.direction is Direction.FORWARD
    assert pending.resulting_active == "12A100a"
    # Redo what is not reported done, the half-done step included.
    assert [s.index for s in pending.recovery_steps()] == [s.index for s in plan.apply_steps[1:]]


def test_an_ended_activation_is_active_and_its_deactivation_is_not() -> None:
    plan = activation()
    records = records_until(plan, steps_done=len(plan.prepare_steps), commit=True)
    records.append(end_record(1, EndOutcome.COMPLETED, "12A100a"))
    state = interpret(records)
    assert (state.active, state.pending, state.active_plan) == ("12A100a", None, plan)

    back = plan.reversed()
    records += records_until(back, steps_done=1, commit=False, txn=2)
    records += [recover_record(2, Direction.BACK), end_record(2, EndOutcome.ROLLED_BACK, "12A100a")]
    assert interpret(records).active == "12A100a"

    records += records_until(back, steps_done=len(back.prepare_steps), commit=True, txn=3)
    pending = interpret(records).pending
    assert pending is not None
    assert pending.resulting_active is None
    records.append(end_record(3, EndOutcome.COMPLETED, None))
    assert interpret(records).active is None


def test_a_checkpoint_carries_the_active_plan() -> None:
    plan = activation()
    state = interpret([checkpoint_record(7, plan)])
    assert (state.active, state.last_txn, state.active_plan) == ("12A100a", 7, plan)
    assert interpret([checkpoint_record(7, None)]).active is None


def good_prefix() -> list[Record]:
    return records_until(activation(), steps_done=0, commit=False)


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"type": "intent", "txn": 1, "step": 0, "kind": "mkdir", "path": "x"}], "not under way"),
        ([*good_prefix(), {"type": "mystery", "txn": 1}], "unknown"),
        ([*good_prefix(), done_record(1, activation().steps[0])], "never begun"),
        ([*good_prefix(), commit_record(1)], "before its prepare steps are done"),
        ([*good_prefix(), intent_record(1, activation().steps[-1])], "before its commit"),
        (
            [*good_prefix(), {"type": "intent", "txn": 1, "step": 99, "kind": "x", "path": ""}],
            "not in the plan",
        ),
        (
            [*good_prefix(), {"type": "intent", "txn": 1, "step": 0, "kind": "stage", "path": ""}],
            "is not 'stage'",
        ),
        ([*good_prefix(), end_record(1, EndOutcome.COMPLETED, "12A100a")], "ends in a way"),
        ([*good_prefix(), recover_record(1, Direction.FORWARD)], "wrong direction"),
        ([*good_prefix(), begin_record(2, activation())], "begins before 1 ended"),
        ([begin_record(1, activation().reversed())], "does not undo the active activation"),
        ([{"type": "begin", "txn": 1, "plan": {"operation": "x"}}], "plan is not an object"),
        ([*good_prefix(), checkpoint_record(1, None)], "not the first record"),
    ],
)
def test_records_that_break_the_protocol_are_corruption(
    records: list[Record], message: str
) -> None:
    with pytest.raises(JournalCorrupt, match=message):
        interpret(records)


def test_a_plan_with_a_bad_file_entry_is_corruption() -> None:
    document = activation().to_json()
    files = document["files"]
    assert isinstance(files, list)
    files[0] = {**files[0], "path": "../etc/passwd"}
    with pytest.raises(JournalCorrupt, match="climbs out"):
        Plan.from_json(document)


def test_step_kinds_know_their_phase() -> None:
    assert {k for k in StepKind if k.phase.value == "prepare"} == {
        StepKind.MKDIR,
        StepKind.STAGE,
        StepKind.BACKUP,
        StepKind.RESTAGE,
    }
