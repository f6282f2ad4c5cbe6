"""Reading a fleet's inventory from disk: DDM status reports, MDM DeviceInformation, osquery.

Two layouts are accepted:

* a folder of ``*.json`` (and, for MDM, ``*.plist``) files; for DDM and MDM
  one per device, the file name (without extension) being the device id, the
  content one record or a list applied in order (full first, then partial);
* an NDJSON file, one record per line; lines for the same device are applied
  in order, as the server received them.

Three record formats (:class:`InventoryFormat`), detected per record or named:

* ``ddm``: a DDM status report, ``{"StatusItems": ...}``; in NDJSON
  ``{"device_id": ..., "report": {...}}``;
* ``mdm``: an MDM ``DeviceInformation`` result, the command response with
  ``QueryResponses`` or the ``QueryResponses`` dictionary itself, as plist or
  JSON; in NDJSON ``{"device_id": ..., "QueryResponses": {...}}`` (or the
  device id from ``UDID``);
* ``osquery``: rows of ``os_version`` joined with ``system_info``, as
  ``osqueryi --json`` prints them (a JSON array), or osqueryd's results log
  (``{"hostIdentifier": ..., "columns": {...}}`` lines); the device id is the
  row's ``uuid``, else ``hostIdentifier`` or ``hostname``.

MDM and osquery records become the DDM items a device would have reported
(:mod:`bsi.domain.sources`), so every source is validated and normalised alike.

Input is read whole before anything is decided: a malformed file or line is
refused with its location, so a report is never computed on half a fleet by
accident. ``skip_invalid`` turns those refusals into :class:`UnreadableDevice`
entries instead.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bsi.domain.declarations import Declaration, validate_declaration
from bsi.domain.sources import device_information_items, osquery_items
from bsi.domain.status import DeviceState, merge_status, nest_status_items, parse_status_report
from bsi.errors import BsiError, InvalidDeclaration, InvalidInput, InvalidStatusReport, NotFound
from bsi.strict import read_json, read_plist


class InventoryFormat(StrEnum):
    """How a record of the fleet's inventory is written; ``auto`` detects it per record."""

    AUTO = "auto"
    DDM = "ddm"
    MDM = "mdm"
    OSQUERY = "osquery"


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


def load_fleet(
    path: Path, *, skip_invalid: bool = False, form: InventoryFormat = InventoryFormat.AUTO
) -> Fleet:
    """Fold every device's records into its state."""
    if not path.exists():
        raise NotFound(f"no status reports at {path}", hint="give a folder or an .ndjson file")
    raw = _folder_entries(path) if path.is_dir() else _ndjson_entries(path)
    entries = _as_reports(raw, form)
    states: dict[str, DeviceState] = {}
    unreadable: dict[str, UnreadableDevice] = {}
    for device_id, location, report in entries:
        if device_id in unreadable:
            continue
        try:
            if isinstance(report, BsiError):
                raise report
            parsed = parse_status_report(report)
            if parsed.invalid:
                # The server keeps the rest of such a report; an export is fixed at its
                # source instead, so a bad item refuses the record (fail closed).
                first = parsed.invalid[0]
                raise InvalidStatusReport(f"status item {first['path']}: {first['reason']}")
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
    files = sorted([*folder.glob("*.json"), *folder.glob("*.plist")])
    if not files:
        raise NotFound(f"no *.json or *.plist inventory files in {folder}")
    for file in files:
        try:
            content = _read_document(file)
        except InvalidInput as error:
            yield file.stem, str(file), error
            continue
        reports = content if isinstance(content, list) else [content]
        for index, report in enumerate(reports):
            location = f"{file}[{index}]" if isinstance(content, list) else str(file)
            yield file.stem, location, report


def _read_document(file: Path) -> object:
    """The file's document by :mod:`bsi.strict`'s rules; errors leave naming the file to
    the caller, which adds the location."""
    try:
        data = file.read_bytes()
    except OSError as error:
        raise InvalidInput(f"cannot read: {error.strerror or error}") from None
    if file.suffix == ".plist":
        return read_plist(data, source="")
    return read_json(data, source="")


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
            record = read_json(line, source="")
        except InvalidInput as error:
            yield f"<line {number}>", location, error
            continue
        device_id = _line_device_id(record)
        if device_id is None:
            yield f"<line {number}>", location, _no_device_id()
            continue
        yield (
            device_id,
            location,
            record.get("report", record) if isinstance(record, dict) else record,
        )


def _no_device_id() -> InvalidInput:
    return InvalidInput(
        'each record needs a "device_id" string (or, for MDM, UDID; for osquery, '
        "hostIdentifier or the uuid column)",
        hint='a DDM status report carries no device id: send {"device_id": ..., "report": {...}}',
    )


def _line_device_id(record: object) -> str | None:
    if not isinstance(record, dict):
        return None
    columns = record.get("columns")
    answers = record.get("QueryResponses")
    for candidate in (
        record.get("device_id"),
        answers.get("UDID") if isinstance(answers, dict) else None,
        record.get("UDID"),
        columns.get("uuid") if isinstance(columns, dict) else None,
        record.get("hostIdentifier"),
        record.get("uuid"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def inventory_reports(
    records: list[object], form: InventoryFormat, *, where: str
) -> Iterator[Entry]:
    """(device id, location, DDM report or the error) for each record of an upload.

    The device id comes from ``device_id``, MDM's ``UDID``, osquery's ``uuid``
    or ``hostIdentifier``; a record with none is refused (a placeholder would be stored
    as a device, and the next such record taken for the same one). ``where`` names the
    upload in locations (``body[3]``).
    """
    entries: list[Entry] = []
    for index, record in enumerate(records):
        device_id, location = _line_device_id(record), f"{where}[{index}]"
        if device_id is None:
            entries.append((f"<{location}>", location, _no_device_id()))
        else:
            report = record.get("report", record) if isinstance(record, dict) else record
            entries.append((device_id, location, report))
    yield from _as_reports(iter(entries), form)


def _as_reports(entries: Iterator[Entry], form: InventoryFormat) -> Iterator[Entry]:
    """Each record as the DDM report it stands for (osquery arrays: one per row and host)."""
    for device_id, location, record in entries:
        if isinstance(record, BsiError):
            yield device_id, location, record
            continue
        found = form if form is not InventoryFormat.AUTO else detect_format(record)
        try:
            if found is InventoryFormat.DDM or found is None:
                yield device_id, location, record  # parse_status_report names what is wrong
            elif found is InventoryFormat.MDM:
                yield device_id, location, _report(device_information_items(_answers(record)))
            else:
                yield from _osquery_reports(device_id, location, record)
        except BsiError as error:
            yield device_id, location, error


def detect_format(record: object) -> InventoryFormat | None:
    """The format of one record, from its keys; ``None`` when it is none of them."""
    if isinstance(record, dict):
        if "StatusItems" in record:
            return InventoryFormat.DDM
        if "QueryResponses" in record or "OSVersion" in record or "BuildVersion" in record:
            return InventoryFormat.MDM
        row = record.get("columns", record)
        if isinstance(row, dict) and "platform" in row and ("build" in row or "version" in row):
            return InventoryFormat.OSQUERY
    if isinstance(record, list) and record and all(isinstance(r, dict) for r in record):
        return InventoryFormat.OSQUERY
    return None


def _answers(record: object) -> Mapping[str, object]:
    if not isinstance(record, dict):
        raise InvalidInput(f"an MDM DeviceInformation record is a dictionary, not {record!r}")
    answers = record.get("QueryResponses", record)
    if not isinstance(answers, dict):
        raise InvalidInput(f"QueryResponses must be a dictionary, not {answers!r}")
    return answers


def _osquery_reports(device_id: str, location: str, record: object) -> Iterator[Entry]:
    rows = record if isinstance(record, list) else [record]
    for index, row in enumerate(rows):
        where = f"{location}[{index}]" if isinstance(record, list) else location
        columns = row.get("columns", row) if isinstance(row, dict) else row
        if not isinstance(columns, dict):
            yield device_id, where, InvalidInput(f"an osquery row is an object, not {row!r}")
            continue
        host = next(
            (
                str(v).strip()
                for v in (columns.get("uuid"), row.get("hostIdentifier"), columns.get("hostname"))
                if isinstance(v, str) and v.strip()
            ),
            device_id if not isinstance(record, list) else f"{device_id}[{index}]",
        )
        try:
            yield host, where, _report(osquery_items(columns))
        except BsiError as error:
            yield host, where, error


def _report(items: dict[str, object]) -> dict[str, object]:
    return {"StatusItems": nest_status_items(items), "Errors": [], "FullReport": True}


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
            content = read_json(file.read_bytes(), source=str(file))
        except OSError as error:
            raise InvalidInput(f"{file}: cannot read: {error.strerror or error}") from None
        for index, item in enumerate(content if isinstance(content, list) else [content]):
            try:
                declarations.append(validate_declaration(item))
            except InvalidDeclaration as error:
                where = f"{file}[{index}]" if isinstance(content, list) else str(file)
                raise InvalidInput(f"{where}: {error.message}", hint=error.hint) from error
    return declarations
