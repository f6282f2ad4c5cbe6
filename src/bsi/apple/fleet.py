"""Reading a fleet's DDM status reports from disk.

Two layouts are accepted, both common exports of an MDM's DDM store:

* a folder of ``*.json`` files, one per device; the file name (without
  ``.json``) is the device id, the content one status report or a list of
  reports applied in order (full first, then partial);
* an NDJSON file, one ``{"device_id": ..., "report": {...}}`` per line; lines
  for the same device are applied in order, as the server received them.

Input is read whole before anything is decided: a malformed file or line is
refused with its location, so a report is never computed on half a fleet by
accident. ``skip_invalid`` turns those refusals into :class:`UnreadableDevice`
entries instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bsi.domain.declarations import Declaration, validate_declaration
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.errors import BsiError, InvalidDeclaration, InvalidInput, InvalidStatusReport, NotFound


@dataclass(frozen=True, slots=True)
class UnreadableDevice:
    """A device (or input line) whose reports could not be used, and why."""

    device_id: str
    location: str
    error: str


@dataclass(frozen=True, slots=True)
class Fleet:
    states: dict[str, DeviceState]
    unreadable: tuple[UnreadableDevice, ...] = ()


def load_fleet(path: Path, *, skip_invalid: bool = False) -> Fleet:
    """Fold every device's reports into its state."""
    if not path.exists():
        raise NotFound(f"no status reports at {path}", hint="give a folder or an .ndjson file")
    entries = _folder_entries(path) if path.is_dir() else _ndjson_entries(path)
    states: dict[str, DeviceState] = {}
    unreadable: dict[str, UnreadableDevice] = {}
    for device_id, location, report in entries:
        if device_id in unreadable:
            continue
        try:
            if isinstance(report, BsiError):
                raise report
            parsed = parse_status_report(report)
            states[device_id] = merge_status(states.get(device_id), parsed)
        except BsiError as error:
            if not skip_invalid:
                raise InvalidStatusReport(
                    f"{location}: {error.message}",
                    hint="fix or remove it, or pass --skip-invalid to report it and go on",
                ) from error
            states.pop(device_id, None)
            unreadable[device_id] = UnreadableDevice(device_id, location, error.message)
    return Fleet(states, tuple(unreadable.values()))


Entry = tuple[str, str, object]


def _folder_entries(folder: Path) -> Iterator[Entry]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise NotFound(f"no *.json status reports in {folder}")
    for file in files:
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            yield file.stem, str(file), InvalidInput(f"not a JSON file: {error}")
            continue
        reports = content if isinstance(content, list) else [content]
        for index, report in enumerate(reports):
            location = f"{file}[{index}]" if isinstance(content, list) else str(file)
            yield file.stem, location, report


def _ndjson_entries(file: Path) -> Iterator[Entry]:
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"cannot read {file}: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        location = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield f"<line {number}>", location, InvalidInput(f"not JSON: {error.msg}")
            continue
        device_id = record.get("device_id") if isinstance(record, dict) else None
        if not isinstance(device_id, str) or not device_id.strip():
            yield (
                f"<line {number}>",
                location,
                InvalidInput('each line needs a "device_id" string and a "report" object'),
            )
            continue
        yield device_id, location, record.get("report")


def load_declarations(path: Path) -> list[Declaration]:
    """Declarations from a folder of ``*.json`` files, or one file (an object or a list).

    Every declaration is validated against bsi's copy of Apple's schema; one
    bad declaration refuses the lot, naming its file and key path.
    """
    if not path.exists():
        raise NotFound(f"no declarations at {path}")
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    declarations = []
    for file in files:
        try:
            content = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InvalidInput(f"{file}: not a JSON file: {error}") from error
        for index, item in enumerate(content if isinstance(content, list) else [content]):
            try:
                declarations.append(validate_declaration(item))
            except InvalidDeclaration as error:
                where = f"{file}[{index}]" if isinstance(content, list) else str(file)
                raise InvalidInput(f"{where}: {error.message}", hint=error.hint) from error
    return declarations
