"""What the swap activator does, step by step, and what a journal says about it.

Pure: no I/O, no clock. The activator (:mod:`bsi.agent.activators.swap`)
does the steps and writes the journal; this module decides which steps there
are, in which order, and — reading the journal back after a crash — whether
the interrupted transaction must be finished or undone, and which steps that
takes. Keeping the decision here, apart from the file system, lets it be
tested exhaustively and lets the activator's recovery and its in-process
error handling share one rule.

The rule
--------

A transaction is one activation or one deactivation of one supplement. It
has two phases separated by a ``commit`` record:

``prepare``
    only *adds* things the device does not use: directories a new file
    needs, a temporary copy of each new file beside its target (same file
    system, so the later rename is atomic), and a backup of each original in
    the rollback area. No live file is changed.
``apply``
    renames the temporaries over their targets and unlinks removed files —
    steps that are each atomic and can be repeated.

**A transaction whose ``commit`` is in the journal is rolled forward**: the
remaining apply steps are done (again, harmlessly, for the one that may have
been under way), which needs nothing but what prepare made durable before the
commit was written. **A transaction without a ``commit`` is rolled back**:
every prepare step that was begun is undone, which only removes what prepare
added — the live files were never touched. Either way the device ends all-old
or all-new, never a mix.

Deactivation (``bsi agent rollback``) is the same in reverse: prepare puts a
copy of each original (a hard link to the backup, or a copy) beside its
target; after commit the originals are renamed back, added files and the
directories made for them are removed, and the rollback area is discarded.

Journal records
---------------

``checkpoint``  first record after the journal is compacted: what is active
``begin``       a transaction starts; carries its whole :class:`Plan`
``intent``      a step is about to be done
``done``        that step is done
``commit``      prepare is complete and durable: from here on, roll forward
``recover``     recovery started, and in which direction
``end``         the transaction is over: ``completed`` or ``rolled-back``,
                and which build is active now
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bsi.agent.journal import JournalCorrupt, Record
from bsi.cryptex.errors import InvalidBundle
from bsi.cryptex.manifest import Action, FileEntry, Manifest, path_problem
from bsi.domain.versions import Build
from bsi.errors import InvalidVersion

ROLLBACK_DIR = "rollback"
"""Under the state directory: ``rollback/<build>/files/<path>`` keeps each original."""

TEMP_PREFIX = ".bsi-"
"""Temporaries beside targets are named ``.bsi-<build>-<hash of path>.new|.old``."""


class Operation(StrEnum):
    ACTIVATE = "activate"
    DEACTIVATE = "deactivate"


class Phase(StrEnum):
    PREPARE = "prepare"
    APPLY = "apply"


class StepKind(StrEnum):
    """Each step, with how it is undone (before commit) or redone (after)."""

    MKDIR = "mkdir"
    """Activate, prepare: make a directory an added file needs. Undo: rmdir."""
    STAGE = "stage"
    """Activate, prepare: copy the staged payload to ``.new`` beside the target. Undo: unlink."""
    BACKUP = "backup"
    """Activate, prepare: hard-link (or copy) the original into the rollback area. Undo: unlink."""
    INSTALL = "install"
    """Activate, apply: rename ``.new`` over the target. Redo: only while ``.new`` exists."""
    DELETE = "delete"
    """Activate, apply: unlink a removed file (its backup keeps it). Redo: unlink if present."""
    RESTAGE = "restage"
    """Deactivate, prepare: link (or copy) the backup to ``.old`` by the target. Undo: unlink."""
    RESTORE = "restore"
    """Deactivate, apply: rename ``.old`` over the target. Redo: only while ``.old`` exists."""
    UNLINK = "unlink"
    """Deactivate, apply: remove a file the supplement added. Redo: unlink if present."""
    RMDIR = "rmdir"
    """Deactivate, apply: remove a directory activation made. Redo: rmdir if present."""
    DISCARD = "discard"
    """Deactivate, apply: delete the build's rollback area. Redo: delete what is left."""

    @property
    def phase(self) -> Phase:
        return _PHASES[self]


_PHASES = {
    StepKind.MKDIR: Phase.PREPARE,
    StepKind.STAGE: Phase.PREPARE,
    StepKind.BACKUP: Phase.PREPARE,
    StepKind.RESTAGE: Phase.PREPARE,
    StepKind.INSTALL: Phase.APPLY,
    StepKind.DELETE: Phase.APPLY,
    StepKind.RESTORE: Phase.APPLY,
    StepKind.UNLINK: Phase.APPLY,
    StepKind.RMDIR: Phase.APPLY,
    StepKind.DISCARD: Phase.APPLY,
}


class Direction(StrEnum):
    FORWARD = "forward"
    BACK = "back"


class EndOutcome(StrEnum):
    COMPLETED = "completed"
    ROLLED_BACK = "rolled-back"


@dataclass(frozen=True, slots=True)
class Step:
    """One journaled step; ``path`` is relative to the device root ("" for DISCARD)."""

    index: int
    kind: StepKind
    path: str

    @property
    def phase(self) -> Phase:
        return self.kind.phase


# -- names -------------------------------------------------------------------


def temp_path(build: str, path: str, operation: Operation) -> str:
    """The temporary beside ``path`` (relative to the root) that becomes it on commit.

    Named from a hash of the path, not the path's own name, so that it fits
    in NAME_MAX however long the target's name is, and can be found again
    after a crash from the plan alone. The leading dot, the dots inside and
    the ``.new``/``.old`` ending keep it out of the usual include globs and
    drop-in rules (``conf.d/*.conf``, ``cron.d``, ``sudoers.d``, run-parts,
    systemd units) while it briefly sits beside its target.
    """
    digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]
    suffix = "new" if operation is Operation.ACTIVATE else "old"
    name = f"{TEMP_PREFIX}{build}-{digest}.{suffix}"
    parent = posixpath.dirname(path)
    return f"{parent}/{name}" if parent else name


def rollback_area(build: str) -> str:
    """The build's rollback area, relative to the state directory."""
    return f"{ROLLBACK_DIR}/{build}"


def backup_path(build: str, path: str) -> str:
    """Where the original of ``path`` is kept, relative to the state directory."""
    return f"{rollback_area(build)}/files/{path}"


# -- plans -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one transaction does; written whole into its ``begin`` record.

    ``created_dirs`` are the directories activation makes for added files
    (parents first) — facts about the device that the manifest cannot know,
    recorded so that deactivation removes exactly those and no others.
    """

    operation: Operation
    build: str
    files: tuple[FileEntry, ...]
    created_dirs: tuple[str, ...] = ()
    steps: tuple[Step, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(sorted(self.files, key=lambda f: f.path)))
        object.__setattr__(self, "steps", _steps(self))

    @property
    def prepare_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.phase is Phase.PREPARE)

    @property
    def apply_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.phase is Phase.APPLY)

    def entry(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def reversed(self) -> Plan:
        """The deactivation that undoes this activation."""
        if self.operation is not Operation.ACTIVATE:
            raise ValueError("only an activation plan can be reversed")
        return Plan(Operation.DEACTIVATE, self.build, self.files, self.created_dirs)

    def to_json(self) -> dict[str, object]:
        return {
            "operation": str(self.operation),
            "build": self.build,
            "created_dirs": list(self.created_dirs),
            "files": [entry_to_json(f) for f in self.files],
        }

    @classmethod
    def from_json(cls, value: object) -> Plan:
        """The plan in a journal record; :class:`JournalCorrupt` if it is not one."""
        document = _object(value, "plan", ("operation", "build", "created_dirs", "files"))
        operation = _text(document["operation"], "plan.operation")
        if operation not in set(Operation):
            raise _corrupt(f"plan operation {operation!r} is unknown")
        build = _build(document["build"], "plan.build")
        dirs = tuple(_text(d, "plan.created_dirs[]") for d in _list(document["created_dirs"]))
        for directory in dirs:
            _check_relative(directory, "plan.created_dirs[]")
        files = tuple(entry_from_json(item) for item in _list(document["files"]))
        return cls(Operation(operation), build, files, dirs)


def plan_activation(manifest: Manifest, missing_dirs: Iterable[str] = ()) -> Plan:
    """The activation of ``manifest``; ``missing_dirs`` are added files' absent directories.

    The caller looks at the device to find ``missing_dirs``; each must be a
    directory above some added file, or this raises :class:`ValueError`.
    """
    build = str(manifest.supplemental_build)
    needed = {
        parent
        for entry in manifest.files
        if entry.action is Action.ADD
        for parent in ancestors(entry.path)
    }
    dirs = set(missing_dirs)
    stray = sorted(dirs - needed)
    if stray:
        raise ValueError(f"{stray[0]!r} is not a directory of an added file")
    ordered = tuple(sorted(dirs, key=lambda d: (d.count("/"), d)))
    return Plan(Operation.ACTIVATE, build, manifest.files, ordered)


def ancestors(path: str) -> tuple[str, ...]:
    """The directories above ``path``, outermost first: ``a/b/c`` -> ``a``, ``a/b``."""
    parts = path.split("/")
    return tuple("/".join(parts[:depth]) for depth in range(1, len(parts)))


def _steps(plan: Plan) -> tuple[Step, ...]:
    kinds: list[tuple[StepKind, str]] = []
    payloads = [f.path for f in plan.files if f.action is not Action.REMOVE]
    originals = [f.path for f in plan.files if f.action is not Action.ADD]
    removed = [f.path for f in plan.files if f.action is Action.REMOVE]
    added = [f.path for f in plan.files if f.action is Action.ADD]
    if plan.operation is Operation.ACTIVATE:
        kinds += [(StepKind.MKDIR, d) for d in plan.created_dirs]
        kinds += [(StepKind.STAGE, p) for p in payloads]
        kinds += [(StepKind.BACKUP, p) for p in originals]
        kinds += [(StepKind.INSTALL, p) for p in payloads]
        kinds += [(StepKind.DELETE, p) for p in removed]
    else:
        kinds += [(StepKind.RESTAGE, p) for p in originals]
        kinds += [(StepKind.RESTORE, p) for p in originals]
        kinds += [(StepKind.UNLINK, p) for p in added]
        kinds += [(StepKind.RMDIR, d) for d in reversed(plan.created_dirs)]
        kinds.append((StepKind.DISCARD, ""))
    return tuple(Step(index, kind, path) for index, (kind, path) in enumerate(kinds))


# -- what the device should look like ---------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """One path as it must be: ``sha256`` ``None`` means absent; ``None`` fields are not checked."""

    path: str
    sha256: str | None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


def expectations(plan: Plan, *, active: bool) -> tuple[Expectation, ...]:
    """What each file of ``plan`` must be with the supplement ``active`` or not.

    With it active, every new file has the manifest's content, mode and
    owner and every removed one is gone; without it, the originals have
    their base content (their mode and owner are the device's own, kept by
    the backup, and not in the manifest) and added files are gone.
    """
    result: list[Expectation] = []
    for entry in plan.files:
        if active and entry.action is not Action.REMOVE:
            result.append(Expectation(entry.path, entry.sha256, entry.mode, entry.uid, entry.gid))
        elif active or entry.action is Action.ADD:
            result.append(Expectation(entry.path, None))
        else:
            result.append(Expectation(entry.path, entry.base_sha256))
    return tuple(result)


# -- records -----------------------------------------------------------------


def checkpoint_record(txn: int, active_plan: Plan | None) -> Record:
    return {
        "type": "checkpoint",
        "txn": txn,
        "active": active_plan.build if active_plan else None,
        "plan": active_plan.to_json() if active_plan else None,
    }


def begin_record(txn: int, plan: Plan) -> Record:
    return {"type": "begin", "txn": txn, "plan": plan.to_json()}


def intent_record(txn: int, step: Step) -> Record:
    return _step_record("intent", txn, step)


def done_record(txn: int, step: Step) -> Record:
    return _step_record("done", txn, step)


def _step_record(kind: str, txn: int, step: Step) -> Record:
    return {"type": kind, "txn": txn, "step": step.index, "kind": str(step.kind), "path": step.path}


def commit_record(txn: int) -> Record:
    return {"type": "commit", "txn": txn}


def recover_record(txn: int, direction: Direction) -> Record:
    return {"type": "recover", "txn": txn, "direction": str(direction)}


def end_record(txn: int, outcome: EndOutcome, active: str | None) -> Record:
    return {"type": "end", "txn": txn, "outcome": str(outcome), "active": active}


# -- reading a journal -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """A transaction that began and has not ended: the agent died, or a step failed."""

    txn: int
    plan: Plan
    previous_plan: Plan | None
    committed: bool = False
    intended: frozenset[int] = frozenset()
    done: frozenset[int] = frozenset()
    recoveries: int = 0

    @property
    def direction(self) -> Direction:
        """The rule: committed means forward, anything less means back."""
        return Direction.FORWARD if self.committed else Direction.BACK

    @property
    def previous_active(self) -> str | None:
        return self.previous_plan.build if self.previous_plan else None

    @property
    def resulting_plan(self) -> Plan | None:
        """The activation in force once recovery has gone its way."""
        if self.direction is Direction.BACK:
            return self.previous_plan
        return self.plan if self.plan.operation is Operation.ACTIVATE else None

    @property
    def resulting_active(self) -> str | None:
        plan = self.resulting_plan
        return plan.build if plan else None

    def recovery_steps(self) -> tuple[Step, ...]:
        """The steps recovery does, in order.

        Forward: every apply step not yet done (the one begun but not
        reported done is repeated; each is safe to repeat). Back: every
        prepare step that was begun, last first, to be undone.
        """
        if self.committed:
            return tuple(s for s in self.plan.apply_steps if s.index not in self.done)
        return tuple(s for s in reversed(self.plan.prepare_steps) if s.index in self.intended)


@dataclass(frozen=True, slots=True)
class JournalState:
    """What the journal says: the activation in force, and any unfinished transaction.

    While ``pending`` is set, ``active_plan`` is what was in force before it
    began; the device may be part-way between that and the pending plan
    until recovery has run.
    """

    active_plan: Plan | None = None
    last_txn: int = 0
    pending: Pending | None = None

    @property
    def active(self) -> str | None:
        return self.active_plan.build if self.active_plan else None


def interpret(records: Sequence[Record]) -> JournalState:
    """Replay ``records``; :class:`JournalCorrupt` if they break the protocol.

    Every record is checked against the transaction it belongs to — a step
    that is not in the plan, a ``done`` without its ``intent``, a commit
    before prepare finished — because acting on a journal that does not
    describe what the activator did could destroy the backups.
    """
    state = JournalState()
    for position, record in enumerate(records):
        kind = _text(record.get("type"), "type")
        if kind == "checkpoint":
            if position != 0:
                raise _corrupt("a checkpoint record that is not the first record")
            _fields(record, ("type", "txn", "active", "plan"))
            plan_value = record["plan"]
            plan = None if plan_value is None else Plan.from_json(plan_value)
            if plan is not None and plan.operation is not Operation.ACTIVATE:
                raise _corrupt("the checkpoint's plan is not an activation")
            if record["active"] != (plan.build if plan else None):
                raise _corrupt("the checkpoint's active build disagrees with its plan")
            state = JournalState(plan, _txn(record), None)
        elif kind == "begin":
            state = _begin(state, record)
        else:
            state = _within(state, kind, record)
    return state


def _begin(state: JournalState, record: Record) -> JournalState:
    _fields(record, ("type", "txn", "plan"))
    if state.pending is not None:
        raise _corrupt(f"transaction {_txn(record)} begins before {state.pending.txn} ended")
    txn = _txn(record)
    if txn <= state.last_txn:
        raise _corrupt(f"transaction {txn} does not follow {state.last_txn}")
    plan = Plan.from_json(record["plan"])
    if plan.operation is Operation.ACTIVATE and state.active_plan is not None:
        raise _corrupt(f"activation of {plan.build} begins while {state.active} is active")
    if plan.operation is Operation.DEACTIVATE and (
        state.active_plan is None or state.active_plan.reversed() != plan
    ):
        raise _corrupt(f"deactivation of {plan.build} does not undo the active activation")
    return JournalState(state.active_plan, txn, Pending(txn, plan, state.active_plan))


def _within(state: JournalState, kind: str, record: Record) -> JournalState:
    pending = state.pending
    txn = _txn(record)
    if pending is None or pending.txn != txn:
        raise _corrupt(f"a {kind!r} record for transaction {txn}, which is not under way")
    if kind in ("intent", "done"):
        _fields(record, ("type", "txn", "step", "kind", "path"))
        index = _integer(record["step"], "step")
        steps = pending.plan.steps
        if not 0 <= index < len(steps):
            raise _corrupt(f"step {index} is not in the plan of transaction {txn}")
        step = steps[index]
        if (record["kind"], record["path"]) != (str(step.kind), step.path):
            raise _corrupt(f"step {index} of transaction {txn} is not {record['kind']!r}")
        if step.phase is Phase.APPLY and not pending.committed:
            raise _corrupt(f"apply step {index} of transaction {txn} before its commit")
        if kind == "intent":
            pending = _replace(pending, intended=pending.intended | {index})
        elif index not in pending.intended:
            raise _corrupt(f"step {index} of transaction {txn} is done but was never begun")
        else:
            pending = _replace(pending, done=pending.done | {index})
        return JournalState(state.active_plan, state.last_txn, pending)
    if kind == "commit":
        _fields(record, ("type", "txn"))
        unfinished = [s.index for s in pending.plan.prepare_steps if s.index not in pending.done]
        if pending.committed or unfinished:
            raise _corrupt(f"transaction {txn} commits twice or before its prepare steps are done")
        return JournalState(state.active_plan, state.last_txn, _replace(pending, committed=True))
    if kind == "recover":
        _fields(record, ("type", "txn", "direction"))
        if record["direction"] != str(pending.direction):
            raise _corrupt(f"transaction {txn} is recovered in the wrong direction")
        pending = _replace(pending, recoveries=pending.recoveries + 1)
        return JournalState(state.active_plan, state.last_txn, pending)
    if kind == "end":
        _fields(record, ("type", "txn", "outcome", "active"))
        expected = EndOutcome.COMPLETED if pending.committed else EndOutcome.ROLLED_BACK
        if record["outcome"] != str(expected) or record["active"] != pending.resulting_active:
            raise _corrupt(f"transaction {txn} ends in a way its records do not allow")
        return JournalState(pending.resulting_plan, state.last_txn, None)
    raise _corrupt(f"record type {kind!r} is unknown")


def _replace(
    pending: Pending,
    *,
    committed: bool | None = None,
    intended: frozenset[int] | None = None,
    done: frozenset[int] | None = None,
    recoveries: int | None = None,
) -> Pending:
    return Pending(
        pending.txn,
        pending.plan,
        pending.previous_plan,
        pending.committed if committed is None else committed,
        pending.intended if intended is None else intended,
        pending.done if done is None else done,
        pending.recoveries if recoveries is None else recoveries,
    )


# -- reading JSON values -----------------------------------------------------


def entry_to_json(entry: FileEntry) -> dict[str, object]:
    document: dict[str, object] = {"path": entry.path, "action": str(entry.action)}
    for key, value in (
        ("sha256", entry.sha256),
        ("base_sha256", entry.base_sha256),
        ("size", entry.size),
        ("mode", entry.mode),
        ("uid", entry.uid),
        ("gid", entry.gid),
    ):
        if value is not None:
            document[key] = value
    return document


def entry_from_json(value: object) -> FileEntry:
    if not isinstance(value, dict):
        raise _corrupt(f"a file entry is not an object: {value!r:.80}")
    allowed = {"path", "action", "sha256", "base_sha256", "size", "mode", "uid", "gid"}
    if not {"path", "action"} <= set(value) <= allowed:
        raise _corrupt(f"a file entry has the wrong fields: {sorted(value)}")

    def text(key: str) -> str | None:
        return _text(value[key], key) if key in value else None

    def number(key: str) -> int | None:
        return _integer(value[key], key) if key in value else None

    action = _text(value["action"], "action")
    if action not in set(Action):
        raise _corrupt(f"file action {action!r} is unknown")
    try:
        return FileEntry(
            path=_text(value["path"], "path"),
            action=Action(action),
            sha256=text("sha256"),
            base_sha256=text("base_sha256"),
            size=number("size"),
            mode=number("mode"),
            uid=number("uid"),
            gid=number("gid"),
        )
    except InvalidBundle as error:
        raise _corrupt(f"a file entry is invalid: {error.message}") from None


def _corrupt(message: str) -> JournalCorrupt:
    return JournalCorrupt(
        f"journal: {message}",
        hint="the journal does not describe what the activator did; inspect it and the "
        "rollback area before acting",
    )


def _fields(record: Mapping[str, object], keys: tuple[str, ...]) -> None:
    if set(record) != set(keys):
        raise _corrupt(f"a {record.get('type')!r} record has fields {sorted(record)}")


def _object(value: object, where: str, keys: tuple[str, ...]) -> Mapping[str, object]:
    if not isinstance(value, dict) or set(value) != set(keys):
        raise _corrupt(f"{where} is not an object with fields {sorted(keys)}")
    return value


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise _corrupt(f"expected a list, found {value!r:.80}")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _corrupt(f"{where} is not a string: {value!r:.80}")
    return value


def _integer(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _corrupt(f"{where} is not an integer: {value!r:.80}")
    return value


def _txn(record: Mapping[str, object]) -> int:
    txn = _integer(record.get("txn"), "txn")
    if txn < 0:
        raise _corrupt(f"transaction number {txn} is negative")
    return txn


def _build(value: object, where: str) -> str:
    text = _text(value, where)
    try:
        Build.parse(text)
    except InvalidVersion:
        raise _corrupt(f"{where} {text!r} is not a build") from None
    if text != text.strip():
        raise _corrupt(f"{where} {text!r} is not a build")
    return text


def _check_relative(path: str, where: str) -> None:
    problem = path_problem(path)
    if problem:
        raise _corrupt(f"{where} {path!r} {problem}")
