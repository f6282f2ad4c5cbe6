"""The ``swap`` activator: replace files in place by atomic rename, originals kept.

Works on any Linux host, needs no kernel feature, and survives being killed
at any instant: see :mod:`bsi.agent.swap_plan` for the two-phase rule
(prepare adds only; ``commit``; apply renames) and the journal records. This
module does the I/O the plan describes:

* **Before touching anything** it checks that every file the supplement
  changes or removes still has the prerequisite build's content
  (``base_sha256``), that every file it adds is absent, that the staged
  payloads are there, and that each file system has room for the temporary
  copies, backups and journal. A refusal changes nothing.
* **Prepare**: each new file is copied from the staged cryptex to a
  temporary beside its target (same directory, so same file system), its
  hash checked again on the way, then given the manifest's owner and mode
  and fsynced; each original is hard-linked into
  ``<state>/rollback/<build>/files/<path>`` (copied, with owner, mode,
  times and extended attributes, when the state directory is on another
  file system). Directories are fsynced; then the ``commit`` record.
* **Apply**: ``rename(2)`` of each temporary over its target; removed files
  are unlinked (their backup keeps them).
* **Deactivate** mirrors it: each original is linked (or copied) back beside
  its target, and after commit renamed over it — the very inode that was
  there before, so content, mode, owner and times are the baseline's — added
  files and the directories made for them are removed, and the rollback
  area is discarded.

Every step is journaled before it is done (intent) and after (done).
:meth:`SwapActivator.recover`, run at every agent start, rolls a committed
transaction forward and any other back, then checks the files against what
it reports.

Run as ``python -m bsi.agent.activators.swap {stage,activate,deactivate,recover,status}``
for the crash tests, which kill that process (``tests/agent/crashing_swap.py``
runs :func:`main` with a :class:`~bsi.agent.journal.CrashHook`); the agent's
CLI is the real entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import hashlib
import json
import os
import posixpath
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from bsi.agent.activators import (
    BLOCK,
    ActivationError,
    Outcome,
    PrerequisiteMismatch,
    StateLayout,
    TransactionPending,
    blocks,
    check_space,
    existing_ancestor,
    load_staged,
    os_failure,
    stage_bundle,
    state_lock,
)
from bsi.agent.journal import CrashHook, Journal, fsync_directory
from bsi.agent.swap_plan import (
    ROLLBACK_DIR,
    Direction,
    EndOutcome,
    JournalState,
    Operation,
    Pending,
    Plan,
    Step,
    StepKind,
    ancestors,
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
    rollback_area,
    temp_path,
)
from bsi.cryptex.manifest import Action, FileEntry, Manifest
from bsi.errors import BsiError

_CHUNK = 1 << 20
_JOURNAL_MARGIN = 64 << 10
_JOURNAL_BYTES_PER_STEP = 400
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP}
"""``link(2)`` failures that mean "copy instead": another file system, or one without links."""

_MAX_LISTED = 10


class SwapActivator:
    """Activate supplements by renaming files into place; see the module docstring.

    ``journal`` may be given to attach a test hook (``Journal(on_append=...)``);
    by default it is ``<state>/journal``.
    """

    name = "swap"
    relaunches_itself = False
    replaces_in_place = False

    def __init__(self, layout: StateLayout, *, journal: Journal | None = None) -> None:
        self.layout = layout
        self._journal = journal if journal is not None else Journal(layout.journal)
        self._root_real = os.path.realpath(layout.root)
        self._resolved: dict[str, str] = {}

    # -- the protocol --------------------------------------------------------

    def preflight(self, manifest: Manifest, staged_dir: Path) -> None:
        """Every check :meth:`activate` makes before it touches anything, alone."""
        with self._locked():
            state = self._settled()
            if state.active == str(manifest.supplemental_build):
                return
            self._refuse_other_active(state, manifest)
            plan = self._plan_activation(manifest, staged_dir)
            self._check_space(plan)

    def activate(self, manifest: Manifest, staged_dir: Path) -> Outcome:
        """Make the staged payloads live; all-or-nothing, even across a crash."""
        build = str(manifest.supplemental_build)
        with self._locked():
            state = self._settled()
            if state.active == build and state.active_plan is not None:
                problems = self._check(state.active_plan, active=True)
                return Outcome("activate", "already-active", build, build, 0, problems)
            self._refuse_other_active(state, manifest)
            plan = self._plan_activation(manifest, staged_dir)
            self._check_space(plan)
            self._run(state, plan, staged_dir, doing=f"activating supplement {build}")
        return Outcome(
            "activate", "activated", build, build, len(plan.files), self._check(plan, active=True)
        )

    def deactivate(self, manifest: Manifest, *, force: bool = False) -> Outcome:
        """Return every file to the baseline: the original bytes, mode, owner and times.

        Refused, with nothing changed, if a file the supplement installed has
        been changed since (someone edited it; the edit would be lost), unless
        ``force``; refused always if a backup is missing or damaged.
        """
        build = str(manifest.supplemental_build)
        with self._locked():
            state = self._settled()
            activation = state.active_plan
            if activation is None:
                return Outcome("deactivate", "not-active", build, None)
            if activation.build != build:
                raise ActivationError(
                    f"supplement {activation.build} is active, not {build}; nothing was changed",
                    reason="not-active",
                )
            if tuple(manifest.files) != activation.files:
                raise ActivationError(
                    f"the manifest of {build} given is not the one that was activated; "
                    "nothing was changed",
                    reason="manifest-mismatch",
                )
            self._check_deactivation(activation, force=force)
            plan = activation.reversed()
            self._check_space(plan)
            self._run(state, plan, None, doing=f"deactivating supplement {build}")
        return Outcome(
            "deactivate",
            "deactivated",
            build,
            None,
            len(plan.files),
            self._check(activation, active=False),
        )

    def recover(self) -> Outcome:
        """Finish a committed transaction or undo an uncommitted one, then check the files.

        ``problems`` in the outcome lists anything found out of place after
        recovery; the state reported is the journal's, which recovery has just
        made true on disk.
        """
        with self._locked():
            state = self._interpret()
            pending = state.pending
            if pending is None:
                problems = self._check_state(state)
                return Outcome("recover", "nothing-to-do", None, state.active, 0, problems)
            if pending.committed:
                self._roll_forward(pending)
            else:
                self._roll_back(pending)
            after = pending.resulting_plan
            checked = after if after is not None else pending.plan
            return Outcome(
                "recover",
                "rolled-forward" if pending.committed else "rolled-back",
                pending.plan.build,
                pending.resulting_active,
                len(pending.plan.files),
                self._check(checked, active=after is not None),
            )

    def active(self) -> str | None:
        """The supplemental build in force; :class:`TransactionPending` until recovered."""
        return self._settled().active

    # -- more than the protocol ----------------------------------------------

    def forget(self, build: str) -> None:
        """Drop ``build`` as active without restoring anything.

        For a host whose OS moved to a new release: the release replaced the
        files, so putting the old originals back would undo the upgrade. The
        journal is reset to "nothing active" and the backups are deleted.
        """
        with self._locked():
            state = self._interpret()
            if state.pending is not None:
                raise TransactionPending(
                    f"cannot forget {build} while a transaction is pending", hint="recover first"
                )
            if state.active != build:
                return
            self._journal.reset([checkpoint_record(state.last_txn, None)])
            shutil.rmtree(self.layout.state / rollback_area(build), ignore_errors=True)

    def pending(self) -> str | None:
        """What an interrupted transaction was doing, or ``None``."""
        pending = self._interpret().pending
        if pending is None:
            return None
        return (
            f"{pending.plan.operation} of {pending.plan.build} "
            f"({'committed' if pending.committed else 'not committed'})"
        )

    def verify(self) -> tuple[str, ...]:
        """What is out of place compared with the state the journal reports."""
        self._resolved.clear()
        return self._check_state(self._settled())

    # -- transactions ----------------------------------------------------------

    def _run(self, state: JournalState, plan: Plan, staged_dir: Path | None, *, doing: str) -> None:
        """Begin, prepare, commit, apply, end; on a failure before commit, roll back."""
        txn = state.last_txn + 1
        self.layout.state.mkdir(parents=True, exist_ok=True)
        self._journal.reset([checkpoint_record(state.last_txn, state.active_plan)])
        self._journal.append(begin_record(txn, plan))
        try:
            for step in plan.prepare_steps:
                self._step(txn, step, functools.partial(self._prepare, plan, step, staged_dir))
            self._seal(plan)
            self._journal.append(commit_record(txn))
        except BaseException as error:
            self._abort(error, doing)
        try:
            self._apply(txn, plan, plan.apply_steps, resulting=_resulting(plan))
        except OSError as error:
            raise ActivationError(
                f"{doing} failed after it was committed ({error.filename}: {error.strerror}); "
                "the next recovery finishes it",
                reason="interrupted",
                hint="run recover once the cause is fixed",
            ) from error

    def _step(self, txn: int, step: Step, action: Callable[[], None]) -> None:
        self._journal.append(intent_record(txn, step))
        action()
        self._journal.append(done_record(txn, step))

    def _apply(self, txn: int, plan: Plan, steps: Sequence[Step], *, resulting: str | None) -> None:
        for step in steps:
            self._step(txn, step, functools.partial(self._do_apply, plan, step))
        self._seal(plan, applied=True)
        self._journal.append(end_record(txn, EndOutcome.COMPLETED, resulting))

    def _abort(self, error: BaseException, doing: str) -> NoReturn:
        """Roll the transaction back unless its commit is durable, then raise what went wrong.

        The journal, not the failure, decides: a ``commit`` that failed to be
        written was truncated away and is rolled back; one that was written
        (a hook raised after it) is left for recovery to finish.
        """
        try:
            pending = self._interpret().pending
            if pending is not None and not pending.committed:
                self._roll_back(pending)
        except (OSError, BsiError) as failure:
            raise ActivationError(
                f"{doing} failed ({_describe(error)}), and undoing it failed too "
                f"({_describe(failure)}); no live file was changed, but temporary files may "
                "remain until recovery",
                reason="interrupted",
                hint="run recover once the cause is fixed",
            ) from error
        if isinstance(error, OSError):
            raise os_failure(error, doing, changed=False) from error
        raise error

    def _roll_forward(self, pending: Pending) -> None:
        self._journal.append(recover_record(pending.txn, Direction.FORWARD))
        self._apply(
            pending.txn,
            pending.plan,
            pending.recovery_steps(),
            resulting=pending.resulting_active,
        )

    def _roll_back(self, pending: Pending) -> None:
        """Undo the begun prepare steps; live files were never touched before commit.

        The ``recover`` record is only informative, so a journal too full to
        take it does not stop the undo; the ``end`` record is written last,
        so that if the undo is cut short it is simply done again.
        """
        with contextlib.suppress(OSError):
            self._journal.append(recover_record(pending.txn, Direction.BACK))
        plan = pending.plan
        for step in pending.recovery_steps():
            self._undo(plan, step)
        if plan.operation is Operation.ACTIVATE:
            # Only this transaction's backups can be there: activation is
            # refused while a rollback area for the build exists.
            _remove_tree(self.layout.state / rollback_area(plan.build))
        self._seal(plan)
        self._journal.append(
            end_record(pending.txn, EndOutcome.ROLLED_BACK, pending.previous_active)
        )

    # -- the steps -------------------------------------------------------------

    def _prepare(self, plan: Plan, step: Step, staged_dir: Path | None) -> None:
        if step.kind is StepKind.MKDIR:
            directory = self._live(step.path)
            os.mkdir(directory, 0o755)
            os.chmod(directory, 0o755)  # whatever the umask
        elif step.kind is StepKind.STAGE:
            if staged_dir is None:
                raise ValueError("staging needs the staged directory")
            entry = plan.entry(step.path)
            self._copy_payload(staged_dir / entry.path, self._temp(plan, step.path), entry)
        elif step.kind is StepKind.BACKUP:
            backup = self.layout.state / backup_path(plan.build, step.path)
            backup.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _link_or_copy(self._live(step.path), backup)
        elif step.kind is StepKind.RESTAGE:
            temp = self._temp(plan, step.path)
            _unlink(temp)
            _link_or_copy(self.layout.state / backup_path(plan.build, step.path), temp)
        else:
            raise ValueError(f"{step.kind} is not a prepare step")

    def _do_apply(self, plan: Plan, step: Step) -> None:
        """One apply step, safe to repeat: each checks whether it is already done."""
        if step.kind in (StepKind.INSTALL, StepKind.RESTORE):
            temp = self._temp(plan, step.path)
            if os.path.lexists(temp):
                os.replace(temp, self._live(step.path))
        elif step.kind in (StepKind.DELETE, StepKind.UNLINK):
            _unlink(self._live(step.path))
        elif step.kind is StepKind.RMDIR:
            directory = self._live(step.path)
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError as error:
                # Something else put files there since: keep them, and the directory.
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        elif step.kind is StepKind.DISCARD:
            _remove_tree(self.layout.state / rollback_area(plan.build))
        else:
            raise ValueError(f"{step.kind} is not an apply step")

    def _undo(self, plan: Plan, step: Step) -> None:
        """Undo one prepare step, whether or not it finished; safe to repeat."""
        if step.kind is StepKind.MKDIR:
            try:
                os.rmdir(self._live(step.path))
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
        elif step.kind in (StepKind.STAGE, StepKind.RESTAGE):
            _unlink(self._temp(plan, step.path))
        elif step.kind is StepKind.BACKUP:
            _unlink(self.layout.state / backup_path(plan.build, step.path))
        else:
            raise ValueError(f"{step.kind} is not a prepare step")

    def _copy_payload(self, source: Path, temp: Path, entry: FileEntry) -> None:
        """Copy a staged payload to ``temp``, checking its hash again; give it owner and mode."""
        _unlink(temp)
        digest = hashlib.sha256()
        with _opened(source, os.O_RDONLY) as src, _opened(temp, _CREATE, 0o600) as dst:
            while chunk := os.read(src, _CHUNK):
                digest.update(chunk)
                _write_all(dst, chunk)
            if digest.hexdigest() != entry.sha256:
                raise ActivationError(
                    f"the staged payload of /{entry.path} has sha256 {digest.hexdigest()}, "
                    f"not the manifest's {entry.sha256}: the staged cryptex is damaged",
                    reason="staged-content",
                    hint="discard the staged cryptex and stage the bundle again",
                )
            _set_owner_and_mode(dst, entry.uid, entry.gid, entry.mode)
            os.fsync(dst)

    def _seal(self, plan: Plan, *, applied: bool = False) -> None:
        """fsync every directory whose entries the phase changed, so they survive power loss."""
        directories: set[Path] = set()
        for entry in plan.files:
            directories.add(self._live(entry.path).parent)
        for created in plan.created_dirs:
            directories.add(self._live(created).parent)
            directories.add(self._live(created))
        state = self.layout.state
        directories.add(state / ROLLBACK_DIR)
        if not applied:
            for entry in plan.files:
                if entry.action is not Action.ADD:
                    backup = state / backup_path(plan.build, entry.path)
                    directories.update(p for p in backup.parents if p.is_relative_to(state))
        for directory in sorted(directories, key=lambda p: (len(p.parts), str(p)), reverse=True):
            fsync_directory(directory)

    # -- checks before anything is touched ------------------------------------

    def _settled(self) -> JournalState:
        state = self._interpret()
        if state.pending is not None:
            plan = state.pending.plan
            raise TransactionPending(
                f"the {plan.operation} of supplement {plan.build} was interrupted "
                "and has not been recovered",
                hint="run recover (the agent does at start), then try again",
            )
        return state

    def _interpret(self) -> JournalState:
        return interpret(self._journal.read())

    def _refuse_other_active(self, state: JournalState, manifest: Manifest) -> None:
        build = str(manifest.supplemental_build)
        if state.active is not None and state.active != build:
            raise ActivationError(
                f"supplement {state.active} is active; deactivate it before activating {build}",
                reason="another-active",
            )
        area = self.layout.state / rollback_area(build)
        if os.path.lexists(area):
            raise ActivationError(
                f"{str(area)!r} exists although {build} is not active; it may hold the only "
                "copy of original files, so nothing was changed",
                reason="stale-rollback",
                hint="inspect it, restore what it holds if needed, and remove it",
            )

    def _plan_activation(self, manifest: Manifest, staged_dir: Path) -> Plan:
        """The activation plan, once the device is proved to be on the prerequisite build."""
        problems: list[str] = []
        missing: set[str] = set()
        for entry in manifest.files:
            try:
                live = self._live(entry.path)
                if entry.action is Action.ADD:
                    problems += self._check_added(entry, live, missing)
                else:
                    problems += _check_original(entry, live)
                if entry.has_payload:
                    problems += _check_staged(entry, staged_dir / entry.path)
            except PrerequisiteMismatch as error:
                problems.append(error.message)
        if problems:
            build = manifest.prerequisite_build
            raise PrerequisiteMismatch(
                f"the device is not on prerequisite build {build} as the supplement "
                f"{manifest.supplemental_build} expects; nothing was changed: "
                + _listing(problems),
                hint="the host has drifted from its build: reinstall the build's files, "
                "or publish a supplement built against what the host runs",
            )
        return plan_activation(manifest, missing)

    def _check_added(self, entry: FileEntry, live: Path, missing: set[str]) -> list[str]:
        problems: list[str] = []
        if os.path.lexists(live):
            problems.append(f"/{entry.path} exists, but the supplement adds it")
        above = ancestors(entry.path)
        for depth, directory in enumerate(above):
            if directory not in missing:
                try:
                    info = os.stat(self._live(directory))
                except FileNotFoundError:
                    pass
                else:
                    if not stat.S_ISDIR(info.st_mode):
                        problems.append(f"/{directory} is not a directory")
                        break
                    continue
            # Absent: so is everything below it, and activation makes them all.
            missing.update(above[depth:])
            break
        return problems

    def _check_deactivation(self, activation: Plan, *, force: bool) -> None:
        backups = self._check_backups(activation)
        if backups:
            raise ActivationError(
                f"cannot return to the baseline: the backups of {activation.build} are "
                "incomplete; nothing was changed: " + _listing(backups),
                reason="backup-missing",
            )
        changed = self._check(activation, active=True, temporaries=False)
        if changed and not force:
            raise PrerequisiteMismatch(
                f"files installed by {activation.build} were changed since; deactivating would "
                "discard those changes, so nothing was changed: " + _listing(changed),
                hint="restore them, or force the deactivation to return to the baseline anyway",
            )

    def _check_space(self, plan: Plan) -> None:
        """Refuse unless every file system involved has room for the whole transaction."""
        state_fs = existing_ancestor(self.layout.state)
        state_dev = os.stat(state_fs).st_dev
        needs: dict[int, list[int]] = {state_dev: [0, 0]}
        where: dict[int, Path] = {state_dev: state_fs}

        def need(path: Path, size: int, inodes: int = 1) -> int:
            found = existing_ancestor(path)
            device = os.stat(found).st_dev
            where.setdefault(device, found)
            totals = needs.setdefault(device, [0, 0])
            totals[0] += blocks(size) * BLOCK
            totals[1] += inodes
            return device

        backup_dirs: set[str] = set()
        for entry in plan.files:
            live = self._live(entry.path)
            if plan.operation is Operation.ACTIVATE:
                if entry.action is not Action.REMOVE:
                    need(live.parent, entry.size or 0)
                if entry.action is not Action.ADD:
                    device = os.stat(existing_ancestor(live.parent)).st_dev
                    if device != state_dev:  # a copy, not a hard link
                        need(self.layout.state, _size(live))
                    backup_dirs.update(ancestors(backup_path(plan.build, entry.path)))
            elif entry.action is not Action.ADD:
                backup = self.layout.state / backup_path(plan.build, entry.path)
                if os.stat(existing_ancestor(live.parent)).st_dev != state_dev:
                    need(live.parent, _size(backup))
        for directory in plan.created_dirs if plan.operation is Operation.ACTIVATE else ():
            need(self._live(directory), BLOCK)
        journal = len(json.dumps(plan.to_json())) + len(plan.steps) * _JOURNAL_BYTES_PER_STEP
        need(self.layout.state, journal + len(backup_dirs) * BLOCK + _JOURNAL_MARGIN, 2)
        doing = f"{plan.operation} supplement {plan.build}"
        for device, (size, inodes) in needs.items():
            check_space(where[device], bytes_needed=size, inodes_needed=inodes, doing=doing)

    # -- checks after ----------------------------------------------------------

    def _check_state(self, state: JournalState) -> tuple[str, ...]:
        if state.active_plan is None:
            return ()
        return (
            *self._check(state.active_plan, active=True),
            *self._check_backups(state.active_plan),
        )

    def _check(
        self, activation: Plan, *, active: bool, temporaries: bool = True
    ) -> tuple[str, ...]:
        """What differs from ``activation`` being in force (``active``) or not."""
        problems: list[str] = []
        for expected in expectations(activation, active=active):
            try:
                live = self._live(expected.path)
            except PrerequisiteMismatch as error:
                problems.append(error.message)
                continue
            found = _compare(expected.path, live, expected.sha256, expected.mode)
            problems += found
            if not found and expected.sha256 is not None and expected.uid is not None:
                info = os.lstat(live)
                if (info.st_uid, info.st_gid) != (expected.uid, expected.gid):
                    problems.append(
                        f"/{expected.path} is owned by {info.st_uid}:{info.st_gid}, "
                        f"not {expected.uid}:{expected.gid}"
                    )
            if temporaries:
                for operation in Operation:
                    temp = self._temp_for(activation.build, expected.path, operation)
                    if os.path.lexists(temp):
                        problems.append(f"a temporary file {str(temp)!r} was left behind")
        for directory in activation.created_dirs:
            path = self._live(directory)
            if active and not path.is_dir():
                problems.append(f"directory /{directory} is missing")
            elif not active and path.is_dir() and not any(path.iterdir()):
                # A directory that still holds files is kept on purpose: they are not ours.
                problems.append(f"directory /{directory} remains")
        return tuple(problems)

    def _check_backups(self, activation: Plan) -> list[str]:
        problems: list[str] = []
        for entry in activation.files:
            if entry.action is Action.ADD:
                continue
            backup = self.layout.state / backup_path(activation.build, entry.path)
            problems += _compare(f"backup of /{entry.path}", backup, entry.base_sha256, None)
        return problems

    # -- paths -----------------------------------------------------------------

    def _live(self, path: str) -> Path:
        """``path`` (relative to the device root) on this machine, its directory resolved.

        Directory symlinks inside the root are followed (``/lib`` ->
        ``usr/lib`` on merged-/usr systems), but one leading outside the
        root is refused; the file itself is never followed. Resolutions are
        remembered for one operation (each starts afresh): a transaction
        only adds or removes directories that did not resolve through links.
        """
        parent, name = posixpath.split(path)
        resolved = self._resolved.get(parent)
        if resolved is None:
            resolved = os.path.realpath(os.path.join(self._root_real, parent))
            if os.path.commonpath([self._root_real, resolved]) != self._root_real:
                raise PrerequisiteMismatch(
                    f"/{path}: its directory resolves to {resolved!r}, outside the device root"
                )
            self._resolved[parent] = resolved
        return Path(resolved) / name

    def _temp(self, plan: Plan, path: str) -> Path:
        return self._temp_for(plan.build, path, plan.operation)

    def _temp_for(self, build: str, path: str, operation: Operation) -> Path:
        return self._live(path).parent / posixpath.basename(temp_path(build, path, operation))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One transaction at a time per state directory; the kernel frees it if we die."""
        self._resolved.clear()
        try:
            with state_lock(self.layout):
                yield
        finally:
            self._journal.close()


def _resulting(plan: Plan) -> str | None:
    return plan.build if plan.operation is Operation.ACTIVATE else None


# -- file helpers --------------------------------------------------------------

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


@contextlib.contextmanager
def _opened(path: Path, flags: int, mode: int = 0o600) -> Iterator[int]:
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _remove_tree(path: Path) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path)
    fsync_directory(path.parent)


def _size(path: Path) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _set_owner_and_mode(fd: int, uid: int | None, gid: int | None, mode: int | None) -> None:
    """Owner first: ``chown`` clears set-user-ID bits, so ``chmod`` must come after it."""
    info = os.fstat(fd)
    if uid is not None and gid is not None and (info.st_uid, info.st_gid) != (uid, gid):
        os.fchown(fd, uid, gid)
    if mode is not None:
        os.fchmod(fd, mode)


def _link_or_copy(source: Path, destination: Path) -> None:
    """A second name for ``source`` — the same inode — or, across file systems, a faithful copy.

    The hard link keeps everything the original had (content, mode, owner,
    times, extended attributes, capabilities) at no cost in space. The copy
    keeps content, owner, mode, extended attributes and times, and is fsynced.
    """
    try:
        os.link(source, destination, follow_symlinks=False)
        return
    except OSError as error:
        if error.errno not in _NO_LINK:
            raise
    with _opened(source, os.O_RDONLY) as src, _opened(destination, _CREATE, 0o600) as dst:
        info = os.fstat(src)
        while chunk := os.read(src, _CHUNK):
            _write_all(dst, chunk)
        _set_owner_and_mode(dst, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode))
        _copy_xattrs(src, dst)
        os.utime(dst, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.fsync(dst)


def _copy_xattrs(source: int, destination: int) -> None:
    """Extended attributes, including ``security.capability``, which ``chown`` would clear."""
    try:
        names = os.listxattr(source)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for name in names:
        os.setxattr(destination, name, os.getxattr(source, name))


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with _opened(path, os.O_RDONLY) as fd:
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _compare(label: str, path: Path, sha256: str | None, mode: int | None) -> list[str]:
    """What is wrong with ``path`` if it must hold ``sha256`` (``None``: must be absent)."""
    name = label if label.startswith("backup") else f"/{label}"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return [] if sha256 is None else [f"{name} is missing"]
    if sha256 is None:
        return [f"{name} exists but should not"]
    if not stat.S_ISREG(info.st_mode):
        return [f"{name} is not a regular file"]
    problems: list[str] = []
    found = _hash(path)
    if found != sha256:
        problems.append(f"{name} has sha256 {found[:16]}…, not {sha256[:16]}…")
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        problems.append(f"{name} has mode {stat.S_IMODE(info.st_mode):04o}, not {mode:04o}")
    return problems


def _check_original(entry: FileEntry, live: Path) -> list[str]:
    """A file the supplement changes or removes must be the prerequisite build's."""
    try:
        info = os.lstat(live)
    except FileNotFoundError:
        return [f"/{entry.path} is missing"]
    if not stat.S_ISREG(info.st_mode):
        return [f"/{entry.path} is not a regular file"]
    found = _hash(live)
    if found != entry.base_sha256:
        return [
            f"/{entry.path} has sha256 {found[:16]}…, not the prerequisite build's "
            f"{(entry.base_sha256 or '')[:16]}…"
        ]
    return []


def _check_staged(entry: FileEntry, staged: Path) -> list[str]:
    try:
        info = os.lstat(staged)
    except FileNotFoundError:
        return [f"the staged payload of /{entry.path} is missing"]
    if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size:
        return [f"the staged payload of /{entry.path} is not the manifest's {entry.size} bytes"]
    return []


def _listing(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    return shown + more


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError):
        return f"{error.filename}: {error.strerror}" if error.filename else str(error.strerror)
    return str(error) or type(error).__name__


# -- a process entry for the crash tests --------------------------------------------


def main(argv: Sequence[str] | None = None, *, crash: CrashHook | None = None) -> int:
    """``python -m bsi.agent.activators.swap``: one operation, its outcome as JSON on stdout.

    Exists so that tests can kill a real activation at any instant (``crash``,
    given only by the test entry; ``python -m`` runs without one); the agent's
    own CLI wires the same calls. Exit status 0 on success, 1 with the error
    (and its ``reason``) as JSON on stderr.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bsi.agent.activators.swap",
        description="Run one swap-activator operation on a device root.",
    )
    parser.add_argument("command", choices=("stage", "activate", "deactivate", "recover", "status"))
    parser.add_argument("--root", type=Path, required=True, help="the device root")
    parser.add_argument("--state", type=Path, help="state directory (default <root>/var/lib/bsi)")
    parser.add_argument("--build", help="supplemental build (activate; deactivate: the active one)")
    parser.add_argument("--bundle", type=Path, help="bundle to stage")
    parser.add_argument("--force", action="store_true", help="deactivate over local changes")
    parser.add_argument(
        "--announce", action="store_true", help="print 'ready' just before the operation (tests)"
    )
    args = parser.parse_args(argv)
    layout = StateLayout.for_root(args.root, args.state)
    activator = SwapActivator(layout, journal=Journal(layout.journal, crash=crash))
    try:
        result = _run_command(activator, layout, args)
    except BsiError as error:
        reason = error.reason if isinstance(error, ActivationError) else type(error).__name__
        print(json.dumps({"error": str(error), "reason": reason}), file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


def _run_command(
    activator: SwapActivator, layout: StateLayout, args: argparse.Namespace
) -> dict[str, object]:
    def announce() -> None:
        if args.announce:
            print("ready", flush=True)

    if args.command == "stage":
        if args.bundle is None:
            raise ActivationError("stage needs --bundle", reason="usage")
        announce()
        manifest = stage_bundle(args.bundle, layout)
        return {"staged": str(manifest.supplemental_build)}
    if args.command == "status":
        pending = activator.pending()
        return {"active": None if pending else activator.active(), "pending": pending}
    if args.command == "recover":
        announce()
        return activator.recover().to_json()
    build = args.build
    if build is None and args.command == "deactivate":
        build = activator.active()
    if build is None:
        raise ActivationError(f"{args.command} needs --build", reason="usage")
    manifest, staged = load_staged(layout, build)
    announce()
    if args.command == "activate":
        return activator.activate(manifest, staged).to_json()
    return activator.deactivate(manifest, force=args.force).to_json()


if __name__ == "__main__":
    sys.exit(main())
