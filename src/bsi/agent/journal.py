"""The agent's journal: an append-only, fsynced log that survives being killed.

An activator writes a record here *before* it does a step (its intent) and
*after* (done), so that an agent killed at any instant — power cut, OOM
killer, ``kill -9`` — can read what it was doing when it restarts and finish
or undo it. The journal therefore has to stay readable whatever instant the
process died at:

* one record per line, appended with ``O_APPEND`` and ``fsync``\\ ed before
  :meth:`Journal.append` returns, so a record that was returned from is on
  disk, and the step after it may rely on that;
* each line is a JSON object carrying its sequence number and the SHA-256 of
  its own canonical text, so a line torn by a crash in mid-write (a prefix of
  the record, or a tail of zeros the file system allocated but never wrote)
  is recognised and ignored instead of misread;
* only the *end* of the journal may be damaged that way: an unreadable line
  followed by a readable one, or a gap in the sequence numbers, is not a
  crash artefact but corruption, and :class:`JournalCorrupt` is raised so that
  nobody rolls a device forward or back on the strength of a damaged log;
* before the first append the torn tail is cut off, so a new record never
  lands glued to the end of a broken one.

The journal holds records, not meaning: what a sequence of records says about
the device is decided by :mod:`bsi.agent.swap_plan`, which is pure. To stop
it growing forever, :meth:`Journal.reset` replaces the whole file atomically
(write a new file, fsync, rename) with a short checkpoint once the last
transaction is over.

Crash injection (test builds only)
----------------------------------

The crash tests need the agent to die at exact points of a real activation
without mocking anything. A :class:`CrashHook` passed to :class:`Journal`
(``crash=``) does that; nothing in bsi makes one, and no environment variable
is read, so a production agent never dies on purpose. Its :class:`CrashPoint`
is written (and parsed by :meth:`CrashPoint.parse`) as:

``<n>`` or ``after:<n>``
    SIGKILL the process right after the ``n``-th record appended through the
    hook is durable (counting from 1, across every journal given the hook);
``before:<n>``
    SIGKILL it just before the ``n``-th record is written, i.e. after the step
    that record would have reported has been done;
``torn:<n>``
    write the first half of the ``n``-th record, fsync, then SIGKILL — a torn
    line exactly as a crash in mid-write leaves it.

The tests reach a real process through ``tests/agent/crashing_swap.py``, which
runs :func:`bsi.agent.activators.swap.main` with a hook from its own argument.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bsi.durable import fsync_directory as fsync_directory
from bsi.durable import write_atomic
from bsi.errors import BsiError, InvalidInput
from bsi.strict import read_json

Record = Mapping[str, object]
"""One journal record: a JSON object (strings, integers, booleans, null, lists, objects)."""

AppendHook = Callable[[int, Record], None]
"""Called with ``(sequence number, record)`` after each record is durable."""

CrashWhen = Literal["before", "after", "torn"]


class JournalCorrupt(BsiError):
    """The journal is damaged somewhere other than a torn last line.

    Recovery refuses to act on it: rolling forward or back on a log that
    lost a record in the middle could undo the wrong steps.
    """


# -- the line format -------------------------------------------------------


def _canonical(value: object) -> str:
    """One text per value: sorted keys, no spaces, ASCII, and no floats.

    Floats are refused because checking a line means parsing it and writing
    it again; integers, strings and the rest survive that round trip exactly.
    """
    _refuse_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _refuse_floats(value: object) -> None:
    if isinstance(value, float):
        raise InvalidInput(f"journal records hold no floats, found {value!r}")
    if isinstance(value, Mapping):
        for item in value.values():
            _refuse_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_floats(item)


def _checksum(seq: int, record: object) -> str:
    return hashlib.sha256(_canonical({"record": record, "seq": seq}).encode("ascii")).hexdigest()


def encode_line(seq: int, record: Record) -> bytes:
    """The journal line for ``record`` at sequence number ``seq``, newline included."""
    line = _canonical({"record": record, "seq": seq, "sha256": _checksum(seq, record)})
    return line.encode("ascii") + b"\n"


def decode_line(line: bytes) -> tuple[int, Record] | None:
    """``(seq, record)`` from one line (without its newline), or ``None`` if it is not intact."""
    try:
        document = read_json(line.decode("ascii"), source="journal")
    except (UnicodeDecodeError, InvalidInput):  # torn, or not what bsi writes
        return None
    if not isinstance(document, dict) or set(document) != {"record", "seq", "sha256"}:
        return None
    seq, record, checksum = document["seq"], document["record"], document["sha256"]
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(record, dict):
        return None
    try:
        if checksum != _checksum(seq, record):
            return None
    except InvalidInput:  # a float: bsi never writes one
        return None
    return seq, record


@dataclass(frozen=True, slots=True)
class ParsedJournal:
    """What a journal's bytes say.

    ``valid_length`` is how many leading bytes hold intact records — where
    the next record must go. ``ignored`` says what was dropped from the end
    (``None`` when nothing was).
    """

    records: tuple[Record, ...]
    valid_length: int
    last_seq: int = 0
    ignored: str | None = None


def parse_journal(data: bytes, *, name: str = "journal") -> ParsedJournal:
    """The intact records of a journal, dropping a torn or unreadable tail.

    Sequence numbers must count up by one from the first record; anything
    unreadable must be at the very end. Otherwise :class:`JournalCorrupt`.
    """
    records: list[Record] = []
    valid_length = 0
    position = 0
    bad: str | None = None
    expected: int | None = None
    while position < len(data):
        newline = data.find(b"\n", position)
        end = len(data) if newline < 0 else newline + 1
        line = data[position:end]
        decoded = decode_line(line[:-1]) if newline >= 0 else None
        if decoded is None:
            if bad is None:
                bad = (
                    f"a torn last line of {len(line)} bytes"
                    if newline < 0
                    else f"an unreadable line at byte {position}"
                )
        elif bad is not None:
            raise JournalCorrupt(
                f"{name}: {bad} is followed by intact records",
                hint="only the last line may be damaged by a crash; "
                "inspect the file before letting the agent act on it",
            )
        else:
            seq, record = decoded
            if expected is not None and seq != expected:
                raise JournalCorrupt(
                    f"{name}: record {seq} follows record {expected - 1}; records are missing",
                    hint="inspect the file before letting the agent act on it",
                )
            expected = seq + 1
            records.append(record)
            valid_length = end
        position = end
    last_seq = expected - 1 if expected is not None else 0
    return ParsedJournal(tuple(records), valid_length, last_seq, bad)


# -- crash injection (test builds only) ----------------------------------------


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """Where a :class:`CrashHook` kills the process; see the module docstring."""

    when: CrashWhen
    record: int

    @classmethod
    def parse(cls, text: str) -> CrashPoint:
        """``<n>``, ``after:<n>``, ``before:<n>`` or ``torn:<n>`` (``n`` >= 1).

        Raises :class:`InvalidInput` naming the text for anything else.
        """
        when, colon, number = text.strip().rpartition(":")
        if not colon:
            when = "after"
        if when not in ("before", "after", "torn") or not number.isdigit() or int(number) < 1:
            raise InvalidInput(
                f"{text!r} is not a crash point",
                hint="expected '<n>', 'after:<n>', 'before:<n>' or 'torn:<n>' with n >= 1",
            )
        kind: CrashWhen = "before" if when == "before" else "torn" if when == "torn" else "after"
        return cls(kind, int(number))


@dataclass(slots=True)
class CrashHook:
    """Test builds only: SIGKILL this process at ``point``.

    Give the one hook to every journal of the process: it counts the records
    appended through all of them (records written by :meth:`Journal.reset`
    are not counted).
    """

    point: CrashPoint
    appended: int = 0

    def next_record(self) -> CrashWhen | None:
        """Count one more record; how to die at it if it is the chosen one, else ``None``."""
        self.appended += 1
        return self.point.when if self.appended == self.point.record else None


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# -- the journal file ------------------------------------------------------


class Journal:
    """An append-only journal file; opened lazily, so making one touches nothing.

    Not safe for two writers at once: the activator holds a lock around
    every transaction.
    """

    def __init__(
        self,
        path: Path,
        *,
        crash: CrashHook | None = None,
        on_append: AppendHook | None = None,
    ) -> None:
        self.path = path
        self._crash = crash
        self._on_append = on_append
        self._fd: int | None = None
        self._next_seq = 1

    # reading

    def parse(self) -> ParsedJournal:
        """The journal as it is on disk; an absent file is an empty journal."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return ParsedJournal((), 0)
        return parse_journal(data, name=str(self.path))

    def read(self) -> tuple[Record, ...]:
        return self.parse().records

    # writing

    def append(self, record: Record) -> int:
        """Write ``record`` and fsync it; returns its sequence number once it is durable."""
        fd = self._open()
        line = encode_line(self._next_seq, record)
        die = self._crash.next_record() if self._crash is not None else None
        if die == "before":
            _die()
        if die == "torn":
            _write_all(fd, line[: max(1, len(line) // 2)])
            os.fsync(fd)
            _die()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError:
            # Disk full in mid-line: take the fragment back so the next
            # record does not land glued to it, and re-read on next use.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self.close()
            raise
        seq = self._next_seq
        self._next_seq += 1
        if die == "after":
            _die()
        if self._on_append is not None:
            self._on_append(seq, record)
        return seq

    def reset(self, records: Sequence[Record]) -> None:
        """Replace the whole journal with ``records``, atomically.

        The new file is written beside the old, fsynced and renamed over it,
        so a crash leaves either the old journal or the new one, whole.
        Records written this way are not counted by a :class:`CrashHook`.
        """
        self.close()
        data = b"".join(encode_line(seq, record) for seq, record in enumerate(records, 1))
        write_atomic(self.path, data, mode=0o600)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open(self) -> int:
        """The append descriptor, after cutting any torn tail off the file."""
        if self._fd is not None:
            return self._fd
        self.path.parent.mkdir(parents=True, exist_ok=True)
        parsed = self.parse()
        created = not self.path.exists()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        if os.fstat(fd).st_size != parsed.valid_length:
            os.ftruncate(fd, parsed.valid_length)
            os.fsync(fd)
        if created:
            fsync_directory(self.path.parent)
        self._fd = fd
        self._next_seq = parsed.last_seq + 1
        return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
