"""The agent's runner: one check-in cycle carried out on a real host.

``Agent.once`` recovers any interrupted transaction, reads the facts, checks
in over DDM (a 304 when the declarations did not change), asks the pure
state machine what to do, and does it: download and verify through TUF,
stage, activate, relaunch, health-check (rolling back on failure), then
reports the truth in DDM status items. Every refusal (wrong prerequisite,
battery, policy, signature, disk full) leaves the host as it was and is
reported with its reason.

Commit (DESIGN "commit"): every activation is recorded as
``pending_commit`` in the state file, durably, before the activator runs; it
becomes the ``last_good`` letter only once its relaunch and health check
pass. After any restart an activation still pending is verified again, or
rolled back to the last good letter. A letter that fails its health check
returns the host to the last good letter (kept staged for that), the
baseline only when there is none, and is not installed again until the
server allows it (``GET /v1/ddm/retries``) or a newer letter appears.

Local state lives in ``<state>/agent.json`` (mode 0600: it holds the device
credential), next to the activator's journal and the preboot area. One cycle
runs at a time: ``<state>/cycle.lock`` is held for the whole cycle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bsi import strict
from bsi.agent.activators import (
    ActivationError,
    Activator,
    StateLayout,
    discard_staged,
    exclusive_lock,
    load_staged,
    make_activator,
    stage_bundle,
    sweep_discarded,
)
from bsi.agent.config import AgentConfig
from bsi.agent.ddm_client import DdmClient
from bsi.agent.facts import read_facts
from bsi.agent.health import passed_without_check, run_health_check
from bsi.agent.machine import DiskState, Plan, Step, next_steps
from bsi.agent.packages import detect_manager, file_digests, named_by, read_packages
from bsi.agent.protocol import Conversation, Exchange
from bsi.agent.relaunch import (
    boot_clock,
    file_ids,
    own_unit,
    processes_using,
    relaunch,
    systemd_running,
    wait_until_relaunched,
)
from bsi.agent.report import Failure, status_report
from bsi.cryptex.manifest import Manifest
from bsi.domain.catalog import Catalog, Supplement
from bsi.domain.declarations import effective_policy, validate_declaration
from bsi.domain.eligibility import DEFAULT_RULES, Decision, Outcome, Reason
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import PackageManager, dump_base, folded_in
from bsi.domain.rollout import HEALTH_CHECK_FAILED
from bsi.domain.status import InstallState
from bsi.domain.versions import Build
from bsi.durable import write_atomic
from bsi.errors import BsiError, Conflict, Forbidden, InvalidInput, ServerRefused
from bsi.trust import TrustedClient, target_name, verify_root
from bsi.trust.errors import MetadataExpired, WrongTarget

if TYPE_CHECKING:
    from bsi.agent.activators.container import ContainerActivator

log = logging.getLogger("bsi.agent")
Clock = Callable[[], datetime]
RELAUNCH_TIMEOUT = 30.0
CLOCK_SKEW_TOLERANCE = 300.0
"""Seconds the device clock may differ from the server's before it is named as a cause."""
REMOVED = "removed"
"""``kind`` of a failure record: a failed health check, or an administrator's removal."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def describe_decision(plan: Plan) -> str:
    """The decision as the agent acts on it.

    Eligibility says "offer ... to the user" when policy leaves the choice to
    a user (Apple's ``RapidSecurityResponse.Enable``); a Linux host has no
    user to ask, so the agent installs it, and says so. Eligibility does not
    know what failed or was removed here: when the plan does not install the
    supplement the decision names, the message says so and why, rather than
    "install" or "offer" next to a cycle that installs nothing.
    """
    decision = plan.decision
    if decision is None:
        return "no decision"
    wanted = decision.supplement
    if (
        decision.outcome in (Outcome.INSTALL, Outcome.ENFORCED)
        and wanted is not None
        and (plan.target is None or plan.target.build != wanted.build)
    ):
        why = "; ".join(plan.reasons) or "refused on this host"
        return f"not installing {wanted.display()}: {why}"
    if decision.reason is Reason.OFFERED and plan.target is not None:
        return (
            f"install {plan.target.display()} ({plan.target.build}): offered, and this host "
            "has no user to ask"
        )
    return decision.message


def _check_published_digest(target: Supplement, name: str, signed: str | None) -> None:
    """Refuse a target signed with other bytes than its build was published with.

    A supplemental build is published once (DESIGN.md: a new letter for new
    bytes). The server's catalogue keeps the SHA-256 the build was first
    published with; a repository that signs other bytes under the same name
    (a second signing tool, a hand edit, a stolen targets key) is refused
    here, before the server has noticed and paused the build. A catalogue
    that names no digest cannot be checked against and is refused too.

    Raises :class:`WrongTarget`.
    """
    expected = target.target_sha256
    if expected is None:
        raise WrongTarget(
            f"the server's catalogue names no SHA-256 for {target.display()} ({target.build}), "
            "so the signed target cannot be checked against what was published",
            hint="upgrade the bsi server, or have it sync its TUF repository "
            "(POST /v1/admin/catalog/sync-repository)",
        )
    if signed != expected:
        raise WrongTarget(
            f"target {name!r} is signed with sha256 {signed}, but {target.build} was "
            f"published with sha256 {expected}: a build is never re-published with other bytes",
            hint="the server pauses such a build; publish the new bytes under a new letter",
        )


def _settled(plan: Plan, active: Manifest | None) -> bool:
    """Whether nothing is pending after a cycle: no target, or the target now runs."""
    target = plan.target
    return target is None or (active is not None and active.supplemental_build == target.build)


def _boot_id() -> str:
    """This boot's id (proc(5) ``boot_id``): boot-clock instants from another boot mean nothing."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _since(changed_at: list[Any] | None) -> float | None:
    """When the files last changed, seconds since this boot; ``None`` if not in this boot."""
    if not changed_at or changed_at[0] != _boot_id():
        return None
    return float(changed_at[1])


@dataclass
class LocalState:
    """What the agent remembers between cycles (``agent.json``)."""

    server_url: str = ""
    device_id: str = ""
    credential: str = ""
    declarations_token: str | None = None
    declarations: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    restart_pending: list[list[Any]] = field(default_factory=list)
    """``[st_dev, st_ino, path]`` of each replaced file processes may still use."""
    last_failure: dict[str, Any] | None = None
    last_good: str | None = None
    pending_commit: str | None = None
    retry_cursor: int = 0
    changed_at: list[Any] | None = None  # [boot id, seconds since boot] of the last file change
    restart_pending_processes: list[str] = field(default_factory=list)
    relaunching: str | None = None
    """The build whose manifest names the files in ``restart_pending`` and their relaunch."""

    def refused(self, kind: str) -> frozenset[Build]:
        """The builds not installed again, of one failure ``kind``."""
        return frozenset(
            Build.parse(build)
            for build, failure in self.failures.items()
            if failure.get("kind", HEALTH_CHECK_FAILED) == kind
        )

    def failure(self) -> Failure | None:
        if not self.last_failure:
            return None
        return Failure(
            self.last_failure["reason"],
            int(self.last_failure["count"]),
            datetime.fromisoformat(self.last_failure["at"]),
        )

    @classmethod
    def read(cls, data: bytes, *, source: str, key: str | None = None, hint: str) -> LocalState:
        """The state in the JSON ``data`` (under ``key`` when given), read by
        :mod:`bsi.strict`'s rules; :class:`InvalidInput` naming ``source`` with ``hint``
        when it is not JSON, not an object or has a field this agent does not know."""
        try:
            document = strict.read_json(data, source="")
            if key is not None:
                if not isinstance(document, dict) or key not in document:
                    raise TypeError(f"no {key!r} in it")
                document = document[key]
            if not isinstance(document, dict):
                raise TypeError(f"a JSON {type(document).__name__}, not an object")
            return cls(**document)
        except (TypeError, InvalidInput) as error:  # not JSON, not an object, an unknown field
            raise InvalidInput(f"{source} is not this agent's state: {error}", hint=hint) from None


@dataclass(frozen=True, slots=True)
class CycleReport:
    """What one cycle decided and did, for the CLI and logs."""

    decision: str
    steps: tuple[str, ...]
    active: str | None
    failure: str | None = None
    outcome: Decision | None = None
    """The eligibility decision the cycle acted on (``None``: none was reached)."""


class Agent:
    """The agent on one device root.

    The cycle (:meth:`cycle`) is one DDM exchange (:mod:`bsi.agent.protocol`)
    any transport can drive: :meth:`once` drives it over httpx. What it does
    to the host goes through a few seams — the ``activator``,
    :meth:`read_facts`, :meth:`load_state`/:meth:`save_state`, the staging
    area (:meth:`_download`, :meth:`_stage`, :meth:`_load_staged`,
    :meth:`_discard`, :meth:`_staged_builds`) and :meth:`_restart_users` — so that a
    simulated device (:mod:`bsi.sim.recorded`) runs this very cycle with a
    record-only activator and in-memory facts.
    """

    def __init__(
        self,
        root: Path,
        config: AgentConfig,
        *,
        clock: Clock = utc_now,
        activator: Activator | None = None,
    ) -> None:
        self.root = root
        self.config = config
        self.clock = clock
        self.layout = StateLayout.for_root(root, config.state_dir_under(root))
        self.activator: Activator = activator or make_activator(
            config.activator,
            self.layout,
            container_engine=config.container_engine,
            container_health_timeout=config.container_health_timeout,
            container_stop_timeout=config.container_stop_timeout,
        )
        self.clock_skew: float | None = None
        """Device clock minus the server's (``Date``), seconds, as last measured."""

    # -- local state -------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.layout.state / "agent.json"

    def load_state(self) -> LocalState:
        """``agent.json`` (read by :mod:`bsi.strict`'s rules), or a fresh state when absent.

        Raises :class:`InvalidInput` naming the file when it is not JSON or not
        this agent's state (not an object, a field this agent does not know);
        the file is left as it is.
        """
        try:
            data = self.state_file.read_bytes()
        except FileNotFoundError:
            return LocalState()
        except OSError as error:
            raise InvalidInput(f"cannot read {self.state_file}: {error}") from error
        return LocalState.read(
            data,
            source=str(self.state_file),
            hint="bsi replaces this file atomically, so something else changed it: "
            "restore it from a backup; the agent changes nothing until it can read it",
        )

    def save_state(self, state: LocalState) -> None:
        """Write ``agent.json`` through bsi's one durable-write path (mode 0600)."""
        data = json.dumps(state.__dict__, indent=1).encode()
        self.layout.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.state_file, data, mode=0o600)

    # -- enrollment --------------------------------------------------------

    def enroll(
        self, server_url: str, token: str, trust_anchor: Path, *, force: bool = False
    ) -> str:
        """Spend an enrollment token; store the identity and the TUF trust anchor.

        Refused before anything is written or spent when the device root does
        not exist (a typo must not enrol a ghost device), when this device is
        already enrolled (unless ``force``: the new identity replaces it; what
        is installed stays), or when the anchor is not self-signed TUF root
        metadata. Nothing is written unless the server accepted the token.
        The anchor is written once (``trust-anchor.json``) and never rewritten
        by a refresh: the TUF metadata cache (``tuf/``) is re-fetchable from it.
        """
        if not self.root.is_dir():
            raise InvalidInput(
                f"the device root {str(self.root)!r} does not exist",
                hint="check --root: bsi manages an existing root and never creates one",
            )
        existing = self.load_state()
        if existing.credential and not force:
            raise Conflict(
                f"this device is already enrolled as {existing.device_id} with "
                f"{existing.server_url}",
                hint="pass --force to replace its identity; installed supplements stay",
            )
        try:
            anchor = trust_anchor.read_bytes()
        except OSError as error:
            raise InvalidInput(
                f"cannot read the trust anchor {str(trust_anchor)!r}: {error.strerror}"
            ) from None
        verify_root(anchor)
        client = DdmClient(server_url)
        try:
            enrollment = client.enroll(token)
        finally:
            client.close()
        with self.cycle_lock():
            shutil.rmtree(self.tuf_dir, ignore_errors=True)  # another repository's cache
            write_atomic(self.anchor_file, anchor, mode=0o644)
            self.save_state(
                replace(
                    existing,
                    server_url=server_url,
                    device_id=enrollment.device_id,
                    credential=enrollment.credential,
                    declarations_token=None,
                    declarations=[],
                    retry_cursor=0,
                )
            )
        return enrollment.device_id

    @property
    def tuf_dir(self) -> Path:
        """python-tuf's metadata cache: discardable, re-fetched from the anchor."""
        return self.layout.state / "tuf"

    @property
    def anchor_file(self) -> Path:
        """The enrolled TUF root (``trust-anchor.json``): written once, fsynced."""
        return self.layout.state / "trust-anchor.json"

    def _anchor(self) -> bytes | None:
        """The enrolled anchor, or ``None`` for a device enrolled before it was kept apart."""
        try:
            return self.anchor_file.read_bytes()
        except FileNotFoundError:
            return None

    def _client(self, state: LocalState) -> DdmClient:
        if not state.credential:
            raise InvalidInput("this device is not enrolled", hint="run 'bsi agent enroll' first")
        return DdmClient(state.server_url, state.credential)

    # -- one cycle ---------------------------------------------------------

    @property
    def cycle_lock_file(self) -> Path:
        return self.layout.state / "cycle.lock"

    @contextlib.contextmanager
    def cycle_lock(self) -> Iterator[None]:
        """Hold ``<state>/cycle.lock`` for a whole cycle (an :func:`exclusive_lock`);
        :class:`Conflict`, naming the holder's pid, if another cycle holds it."""
        self.layout.state.mkdir(parents=True, exist_ok=True, mode=0o700)

        def busy(fd: int) -> BsiError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            return Conflict(
                f"another bsi agent cycle is running on this device (pid {holder}, "
                f"lock {str(self.cycle_lock_file)!r})",
                hint="wait for it to finish; only one cycle runs at a time",
            )

        with exclusive_lock(self.cycle_lock_file, busy) as fd:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield

    def once(self) -> CycleReport:
        with self.cycle_lock():
            self.activator.recover()
            state = self.load_state()
            client = self._client(state)
            try:
                return client.run(self.cycle(state, client.conversation))
            finally:
                client.close()

    def _container_activator(self) -> ContainerActivator | None:
        """The activator when it is the container one; its module (and the docker SDK)
        is imported only then, so no other host pays for it at start-up."""
        if self.activator.name != "container":
            return None
        from bsi.agent.activators.container import ContainerActivator

        return self.activator if isinstance(self.activator, ContainerActivator) else None

    def read_facts(self) -> DeviceFacts:
        """The device's own facts (os-release, hardware, power), before packages."""
        return read_facts(self.root, self.config)

    def facts(self, catalog: Catalog | None = None) -> tuple[DeviceFacts, Manifest | None]:
        """The device's facts with its active supplement, and that supplement's manifest.

        Installed package versions and file digests are read for what
        ``catalog`` (and the active supplement) names, so a check-in never
        carries the whole package list.
        """
        facts = self.read_facts()
        containers = self._container_activator()
        if containers is not None:
            facts = replace(facts, containers=containers.running())
        active = self.activator.active()
        manifest = self._load_staged(active)[0] if active is not None else None
        facts = replace(
            facts,
            supplemental_build=manifest.supplemental_build if manifest else None,
            supplemental_extra=manifest.extra_version if manifest else None,
        )
        return self._with_packages(facts, catalog, manifest), manifest

    def _package_manager(self) -> PackageManager | None:
        """The package database the device root has (dpkg, rpm), if any."""
        return detect_manager(self.root)

    def _with_packages(
        self, facts: DeviceFacts, catalog: Catalog | None, active: Manifest | None
    ) -> DeviceFacts:
        names, paths = named_by(catalog, facts.platform) if catalog else (frozenset(), frozenset())
        if active is not None:
            names |= active.prerequisite.package_names() | {p.name for p in active.fixed_in}
            paths |= {f.path for f in active.prerequisite.files}
        manager = self._package_manager()
        return replace(
            facts,
            package_manager=manager,
            packages=read_packages(self.root, manager, names) if manager else None,
            packages_asked=names if manager else None,
            file_digests=file_digests(self.root, paths, active) if paths else None,
        )

    def cycle(self, state: LocalState, conversation: Conversation) -> Exchange[CycleReport]:
        """One check-in cycle, as a DDM exchange: check in, decide, act, report.

        ``state`` is the loaded local state (saved through :meth:`save_state`
        as the cycle goes). The caller holds the cycle lock and has run the
        activator's recovery (see :meth:`once`).
        """
        facts, active = self.facts()
        token = yield from conversation.declarations_token(state.declarations_token)
        now = self._now(conversation)
        if token is not None:
            declarations = yield from conversation.declarations()
            state.declarations = [d.to_json() for d in declarations]
            state.declarations_token = token
            self.save_state(state)
        policy = self.policy(state)
        found = yield from conversation.device_catalog(facts.platform)
        catalog, holds = found.catalog, found.holds
        facts = self._with_packages(facts, catalog, active)
        yield from self._sync_retries(conversation, state, found.latest_retry)
        active_build = str(active.supplemental_build) if active else None
        if state.pending_commit is not None and state.pending_commit != active_build:
            # Recovery undid it (or it never started): it was never live.
            log.warning(
                "the activation of %s did not complete; it is not live", state.pending_commit
            )
            state.pending_commit = None
            self.save_state(state)
        disk = DiskState(
            active_build=active.supplemental_build if active else None,
            active_prerequisite=active.prerequisite_build if active else None,
            active_folded_in=self._folded_in(facts, active),
            staged=frozenset(self._staged_builds()),
            restart_pending=bool(state.restart_pending),
            failed_builds=state.refused(HEALTH_CHECK_FAILED),
            removed_builds=state.refused(REMOVED),
            last_good=Build.parse(state.last_good) if state.last_good else None,
            uncommitted=Build.parse(state.pending_commit) if state.pending_commit else None,
            relaunching=Build.parse(state.relaunching) if state.relaunching else None,
        )
        rules = self.config.rules(DEFAULT_RULES, facts.platform)
        plan = next_steps(facts, catalog, policy, now, disk, rules, holds)
        for reason in plan.reasons:
            log.info("%s", reason)
        if plan.steps:
            yield from self._report(conversation, facts, active, plan.install_state, state, plan)
        failure = None
        try:
            self._carry_out(plan, state)
        except BsiError as error:
            failure = self._fail(state, error, str(plan.target.build) if plan.target else None)
        facts, active = self.facts(catalog)
        if failure is None and state.last_failure is not None and _settled(plan, active):
            # softwareupdate.failure-reason counts the failures of the *pending*
            # update; with none pending (or it now runs) there are none to report.
            state.last_failure = None
            self.save_state(state)
        final = InstallState.FAILED if failure else InstallState.NONE
        # A failure's report names the update that failed (pending-version), as Apple's
        # install-state "failed" does: the server counts it against that build's rollout.
        failed_plan = plan if failure else None
        yield from self._report(
            conversation, facts, active, final, state, failed_plan, plan.decision
        )
        decision = describe_decision(plan)
        return CycleReport(
            decision,
            tuple(f"{step.value} {build}" for step, build in plan.steps),
            str(active.supplemental_build) if active else None,
            failure,
            plan.decision,
        )

    def _now(self, conversation: Conversation) -> datetime:
        """The instant to decide at: the server's when this device's clock is off.

        A clock behind would hold back a supplement the server already
        offers, one ahead would install one before its time; both are
        reported (``bsi.agent.clock-skew-seconds``) and logged.
        """
        now = self.clock()
        server_date = conversation.server_date
        if server_date is None:
            self.clock_skew = None
            return now
        self.clock_skew = (now - server_date).total_seconds()
        if abs(self.clock_skew) <= CLOCK_SKEW_TOLERANCE:
            return now
        log.warning(
            "this device's clock is %+.0f s off the server's; deciding with the server's time",
            self.clock_skew,
        )
        return server_date

    def _clock_blamed(self, error: MetadataExpired) -> MetadataExpired:
        """An expiry error that names the clock when it is ahead of the server's."""
        skew = self.clock_skew
        if skew is None or skew <= CLOCK_SKEW_TOLERANCE:
            return error
        return MetadataExpired(
            f"{error}; this device's clock is {skew:.0f} s ahead of the server's, which is the "
            "likely cause",
            hint="set this device's clock (timedatectl, chronyc), then run 'bsi agent once'",
        )

    def _sync_retries(
        self, conversation: Conversation, state: LocalState, latest: int | None
    ) -> Exchange[None]:
        """Forget the failures the server allows again (admin ``allow-retry``).

        ``latest`` is the newest allowance's id the catalogue named (``None``: not
        named). Nothing newer than the cursor: nothing to ask. Newer, but no failure
        here: the allowances are passed (an allowance never lifts a later failure),
        without asking which. Only a device with a failure asks ``GET /v1/ddm/retries``.
        """
        if latest is not None and latest <= state.retry_cursor:
            return
        if latest is not None and not state.failures:
            state.retry_cursor = latest
            self.save_state(state)
            return
        try:
            allowed = yield from conversation.retries(state.retry_cursor)
        except ServerRefused as error:
            log.warning("cannot read retry allowances: %s", error)
            return
        if not allowed:
            return
        for ident, build in allowed:
            if state.failures.pop(build, None) is not None:
                log.info("the server allows %s again", build)
            state.retry_cursor = max(state.retry_cursor, ident)
        self.save_state(state)

    @staticmethod
    def _folded_in(facts: DeviceFacts, active: Manifest | None) -> str | None:
        """The installed packages at or past the active supplement's ``fixed_in``, if all are."""
        if active is None:
            return None
        reached = folded_in(
            active.fixed_in, facts.package_manager, active.prerequisite.manager, facts.packages
        )
        return ", ".join(p.display() for p in reached) if reached else None

    def drift(self, active: Manifest | None) -> list[str]:
        """Files the active supplement manages that something else changed (never overwritten).

        A supplement folded in by its package is not drift: the package owns the files.
        """
        if active is None:
            return []
        return list(self.activator.verify())

    def policy(self, state: LocalState) -> SoftwareUpdatePolicy:
        return effective_policy([validate_declaration(d) for d in state.declarations])

    def _staged_builds(self) -> list[Build]:
        """The supplemental builds staged in the preboot area."""
        if not self.layout.cryptexes.is_dir():
            return []
        builds = []
        for entry in self.layout.cryptexes.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                try:
                    builds.append(Build.parse(entry.name))
                except BsiError:
                    continue
        return builds

    def _load_staged(self, build: str) -> tuple[Manifest, Path]:
        """The staged manifest of ``build`` and its payloads' directory (:class:`NotFound`)."""
        return load_staged(self.layout, build)

    def _discard(self, build: str) -> None:
        """Remove ``build`` from the preboot area (nothing if it is not there)."""
        discard_staged(self.layout, build)

    def _carry_out(self, plan: Plan, state: LocalState) -> None:
        bundle: Path | None = None
        for index, (step, build) in enumerate(plan.steps):
            assert build is not None
            name = str(build)
            if step is Step.ROLL_BACK and self._replaced_in_place(plan, index):
                log.info("%s is replaced in place by %s", name, plan.steps[index + 1][1])
                continue
            log.info("%s %s", step.value, name)
            if step is Step.DISCARD:
                self.activator.forget(name)
                self._discard(name)
            elif step is Step.ROLL_BACK:
                manifest, _ = self._load_staged(name)
                self._swap(manifest, state, activate=False)
                if plan.target is None and state.last_good == name:
                    state.last_good = None  # withdrawn: never returned to (DESIGN rule 9)
                    self.save_state(state)
            elif step is Step.DOWNLOAD:
                bundle = self._download(plan, state)
            elif step is Step.STAGE:
                assert bundle is not None
                self._check_fields(plan, self._stage(plan, bundle))
            elif step is Step.ACTIVATE:
                manifest, _ = self._load_staged(name)
                try:
                    self._swap(manifest, state, activate=True)
                except ActivationError as error:
                    # An activator that checks health as it goes (container) failed one:
                    # the letter is refused and the device falls back, as on hosts.
                    if error.reason != HEALTH_CHECK_FAILED:
                        raise
                    self._record_failure(state, name, error.message)
                    self._fall_back(manifest, state, error.message)
            elif step is Step.RELAUNCH:
                manifest, _ = self._load_staged(name)
                self._relaunch([manifest], state)
            elif step is Step.HEALTH_CHECK:
                manifest, _ = self._load_staged(name)
                self._health_check(manifest, state)
        # Every cycle, steps or none: a kill after a relaunch and before its prune
        # (``bsi agent rollback`` killed there) left a letter staged that nothing needs.
        self._prune(state)

    def _replaced_in_place(self, plan: Plan, index: int) -> bool:
        """Whether the roll-back at ``plan.steps[index]`` is left to the activation after it.

        An activator that :attr:`~bsi.agent.activators.Activator.replaces_in_place`
        puts a later letter in place of the active one itself (a container is then
        recreated once, not onto its base and again onto the later letter); should
        the later letter fail, the fall-back returns to the active one the same way.
        """
        following = plan.steps[index + 1 : index + 2]
        return self.activator.replaces_in_place and [s for s, _ in following] == [Step.ACTIVATE]

    def _stage(self, plan: Plan, bundle: Path) -> Manifest:
        """Verify the downloaded ``bundle`` and stage it; the download is removed either way."""
        try:
            return stage_bundle(bundle, self.layout)
        finally:
            shutil.rmtree(bundle.parent, ignore_errors=True)

    def _download(self, plan: Plan, state: LocalState) -> Path:
        """Fetch the target's bundle through TUF (verified against the signed targets)."""
        target = plan.target
        assert target is not None
        server = state.server_url.rstrip("/")
        trusted = TrustedClient(
            self.tuf_dir,
            f"{server}/tuf/metadata/",
            f"{server}/tuf/targets/",
            bootstrap_root=self._anchor(),
        )
        try:
            trusted.refresh()
        except MetadataExpired as error:
            raise self._clock_blamed(error) from error
        name = target_name(target.platform, target.build)
        info = trusted.expect_target(
            name,
            platform=target.platform,
            supplemental_build=str(target.build),
            **dump_base(target.prerequisite, target.fixed_in),
        )
        _check_published_digest(target, name, info.sha256)
        downloads = self.layout.state / "downloads" / str(target.build)
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir(parents=True)
        return trusted.download(info, downloads)

    def _check_fields(self, plan: Plan, manifest: Manifest) -> None:
        """The verified bundle must be the supplement the signed metadata named."""
        target = plan.target
        assert target is not None
        if manifest.supplemental_build != target.build or manifest.platform != target.platform:
            self._discard(str(manifest.supplemental_build))
            raise ActivationError(
                f"bundle for {target.display()} holds {manifest.display()}",
                reason="wrong-target",
            )

    def _swap(
        self, manifest: Manifest, state: LocalState, *, activate: bool, force: bool = False
    ) -> None:
        """Activate or deactivate ``manifest``; the old files' ids join ``restart_pending``.

        Recorded durably before the activator runs, so that a restart at any
        instant finds them: an activation as ``pending_commit`` (verified
        again, see :meth:`_health_check`), and for both ways the files about
        to be replaced (``restart_pending``) and whose manifest names them and
        their relaunch (``relaunching``), so the next cycle relaunches what a
        kill after the files moved left on old content. Refused with nothing
        changed, the record is taken back.
        """
        build = str(manifest.supplemental_build)
        was = (state.pending_commit, state.restart_pending, state.relaunching, state.changed_at)
        was_active = self.activator.active()
        known = {tuple(i) for i in state.restart_pending}
        replaced = {
            (*ident, entry.path)
            for entry in manifest.files
            for ident in file_ids([self.root / entry.path])
        }
        state.restart_pending = [list(i) for i in sorted(known | replaced, key=str)]
        state.relaunching = build
        state.changed_at = [_boot_id(), boot_clock()]
        if activate:
            state.pending_commit = build
        self.save_state(state)
        try:
            if activate:
                _, staged = self._load_staged(build)
                self.activator.activate(manifest, staged)
            else:
                self.activator.deactivate(manifest, force=force)
        except BsiError:
            if self.activator.active() == was_active:  # refused: nothing changed
                state.pending_commit, state.restart_pending, state.relaunching = was[:3]
                state.changed_at = was[3]
                self.save_state(state)
            raise
        if not activate and state.pending_commit == build:
            state.pending_commit = None
        state.changed_at = [_boot_id(), boot_clock()]
        self.save_state(state)

    def _relaunch(self, manifests: list[Manifest], state: LocalState) -> None:
        """Restart each component's services until nothing uses the old content."""
        left = self._restart_users(manifests, state)
        for line in left.values():
            log.warning("restart pending: %s; restart it by hand", line)
        if not left:
            state.restart_pending, state.relaunching = [], None
        state.restart_pending_processes = [left[pid] for pid in sorted(left)]
        self.save_state(state)

    def _restart_users(self, manifests: list[Manifest], state: LocalState) -> dict[int, str]:
        """Relaunch the processes that use ``manifests``' old files (``restart_pending``);
        those still on old content afterwards, described, by pid.

        Each component is judged by its own replaced files (a process on
        another component's old file is that component's), and the wait is
        only for the processes its relaunch restarts: one nothing restarts
        is reported at once, never waited for.
        """
        if self.activator.relaunches_itself:
            return {}  # recreating the containers was their relaunch
        kept = [self.layout.state]  # where swap keeps the originals it replaced
        since = _since(state.changed_at)
        systemd = systemd_running(self.root)
        agent_unit = own_unit()
        left: dict[int, str] = {}
        for manifest in manifests:
            for component in manifest.components:
                mine = {entry.path for entry in component.files}
                old_ids = {
                    (i[0], i[1]) for i in state.restart_pending if len(i) < 3 or i[2] in mine
                }
                paths = [self.root / path for path in sorted(mine)]
                uses = processes_using(paths, old_inodes=old_ids, kept_under=kept, since=since)
                ran, unmanaged = False, set()
                if uses:
                    result = relaunch(
                        component,
                        uses,
                        systemd_available=systemd,
                        root=self.root,
                        own_unit=agent_unit,
                    )
                    for line in result.describe():
                        if not line.startswith("restart by hand"):  # judged after the wait
                            log.info("%s", line)
                    ran = bool(result.plan.steps)
                    unmanaged = {use.pid for use in result.unmanaged}
                # Wait only for what was restarted: nothing else will change by waiting.
                if ran:
                    wait_until_relaunched(
                        paths,
                        old_inodes=old_ids,
                        timeout=RELAUNCH_TIMEOUT,
                        kept_under=kept,
                        since=since,
                        exclude_pids={os.getpid(), *unmanaged},
                    )
                still = processes_using(paths, old_inodes=old_ids, kept_under=kept, since=since)
                for use in still:
                    left[use.pid] = use.describe()
        return left

    def _health_check(self, manifest: Manifest, state: LocalState) -> None:
        """Commit ``manifest`` if its health check passes; otherwise fall back and raise.

        On failure the failure is recorded first (durably: a kill during the
        fallback still knows not to keep this letter), then the letter is
        deactivated and the last good letter activated, relaunched and
        checked in turn; the baseline when there is none (or it fails too).
        """
        result = self._check(manifest)
        if result is None:
            self._commit(manifest, state)
            return
        self._record_failure(state, str(manifest.supplemental_build), result)
        self._fall_back(manifest, state, result)

    def _fall_back(self, manifest: Manifest, state: LocalState, why: str) -> NoReturn:
        """Take back ``manifest`` (recorded as failed) and return to the last good letter.

        With an activator that :attr:`~bsi.agent.activators.Activator.replaces_in_place`,
        the last good letter is activated in place of ``manifest`` (each container
        recreated once, straight back onto it); otherwise ``manifest`` is taken back
        first. Should the last good letter fail too, whichever letter is then live
        is taken back: the host ends on the baseline.
        """
        build = str(manifest.supplemental_build)
        fallback = self._staged_last_good(state, build)
        if fallback is None or not self.activator.replaces_in_place:
            self._swap(manifest, state, activate=False)
        back_on = "the baseline (no healthy letter is staged)"
        if fallback is not None:
            problem = self._activate_checked(fallback, manifest, state)
            if problem is None:
                self._commit(fallback, state)
                back_on = f"the last good letter, {fallback.display()}"
            else:
                self._record_failure(state, str(fallback.supplemental_build), problem)
                live = manifest if self.activator.active() == build else fallback
                self._swap(live, state, activate=False)
                self._relaunch([manifest, fallback], state)
                back_on = f"the baseline ({fallback.display()} failed its health check too)"
        else:
            self._relaunch([manifest], state)
        self._prune(state)
        raise ActivationError(
            f"{manifest.display()} failed its health check ({why}); the host is back on {back_on}",
            reason=HEALTH_CHECK_FAILED,
        )

    def _activate_checked(
        self, fallback: Manifest, failed: Manifest, state: LocalState
    ) -> str | None:
        """Activate, relaunch and check ``fallback`` after ``failed``: ``None`` when it
        passes, else why not (an activator that checks health as it goes, container,
        fails the activation itself)."""
        try:
            self._swap(fallback, state, activate=True)
        except ActivationError as error:
            if error.reason != HEALTH_CHECK_FAILED:
                raise
            return error.message
        self._relaunch([failed, fallback], state)
        return self._check(fallback)

    def _check(self, manifest: Manifest) -> str | None:
        """``None`` when ``manifest``'s health check passes, else why it failed."""
        containers = self._container_activator()
        if containers is not None:
            # Each container's check ran inside it as it was recreated; what is
            # left to check is that every one of them was.
            return containers.check(manifest)
        check = manifest.health_check
        result = run_health_check(check, root=self.root) if check else passed_without_check()
        return None if result.ok else result.reason

    def _commit(self, manifest: Manifest, state: LocalState) -> None:
        """Relaunch and health check passed: ``manifest`` is final and the last good letter."""
        build = str(manifest.supplemental_build)
        state.last_good = build
        state.pending_commit = None
        state.failures.pop(build, None)
        self.save_state(state)
        log.info("committed %s", manifest.display())
        self._prune(state)

    def _record_failure(self, state: LocalState, build: str, reason: str) -> None:
        state.failures[build] = {
            "kind": HEALTH_CHECK_FAILED,
            "reason": f"failed its health check: {reason}",
            "at": self.clock().isoformat(),
        }
        if state.last_good == build:
            state.last_good = None
        self.save_state(state)

    def _staged_last_good(self, state: LocalState, failed: str) -> Manifest | None:
        if state.last_good is None or state.last_good == failed:
            return None
        try:
            manifest, _ = self._load_staged(state.last_good)
        except BsiError:
            return None
        return manifest

    def _prune(self, state: LocalState) -> None:
        """Keep staged only what runs, the last good letter and an activation in flight."""
        keep = {state.last_good, state.pending_commit, self.activator.active()}
        if state.restart_pending:
            keep.add(state.relaunching)  # the next cycle relaunches with its manifest
        for build in self._staged_builds():
            if str(build) not in keep:
                self._discard(str(build))
        sweep_discarded(self.layout)

    def _fail(self, state: LocalState, error: BsiError, build: str | None) -> str:
        """Record ``error`` as the last failure (reported at the next status report).

        The count is of failures of one pending update (Apple's
        ``softwareupdate.failure-reason`` ``count``): it starts again at 1
        when the failure is about another supplemental build than the last.
        """
        reason = getattr(error, "reason", type(error).__name__)
        message = f"{reason}: {error}"
        log.error("%s", message)
        last = state.last_failure
        count = int(last["count"]) + 1 if last and last.get("build") == build else 1
        state.last_failure = {
            "reason": message,
            "count": count,
            "at": self.clock().isoformat(),
            "build": build,
        }
        self.save_state(state)
        return message

    def _report(
        self,
        conversation: Conversation,
        facts: DeviceFacts,
        active: Manifest | None,
        install_state: InstallState,
        state: LocalState,
        plan: Plan | None,
        decision: Decision | None = None,
    ) -> Exchange[None]:
        target = plan.target if plan else None
        drift = [] if self._folded_in(facts, active) else self.drift(active)
        report = status_report(
            facts,
            active_extra=active.extra_version if active else None,
            install_state=install_state,
            pending=target.version if target else None,
            pending_build=str(target.build) if target else None,
            failure=state.failure(),
            restart_pending=bool(state.restart_pending),
            restart_pending_processes=state.restart_pending_processes,
            decision=decision or (plan.decision if plan else None),
            drift=drift,
            clock_skew=round(self.clock_skew) if self.clock_skew is not None else None,
        )
        yield from conversation.report(report)

    def wait(self, generation: int, timeout: float) -> tuple[int, bool]:
        """The server's wake-up long poll (see ``bsi.server.wakeup``)."""
        client = self._client(self.load_state())
        try:
            return client.wait(generation, timeout)
        finally:
            client.close()

    # -- admin commands ----------------------------------------------------

    def recover(self) -> dict[str, Any]:
        """Settle the device without the network (``ExecStartPre`` at boot, or by hand).

        Finishes or undoes an interrupted activator transaction, then settles
        an activation left uncommitted: one that was never live is forgotten;
        one that is live is relaunched and health-checked again (committed,
        or rolled back to the last good letter); one already recorded as
        failed is rolled back at once. The next cycle reports the outcome.
        """
        with self.cycle_lock():
            journal = self.activator.recover()
            state = self.load_state()
            active = self.activator.active()
            pending, result = state.pending_commit, "nothing-pending"
            if pending is not None and pending != active:
                state.pending_commit, result = None, "not-live"
                self.save_state(state)
            elif pending is not None:
                manifest, _ = self._load_staged(pending)
                try:
                    if pending in state.failures:
                        self._fall_back(manifest, state, state.failures[pending]["reason"])
                    self._relaunch([manifest], state)
                    self._health_check(manifest, state)
                    result = "committed"
                except BsiError as error:
                    result = f"rolled-back: {self._fail(state, error, pending)}"
            return {
                "journal": journal.to_json(),
                "uncommitted": pending,
                "result": result,
                "active": self.activator.active(),
                "last_good": state.last_good,
            }

    def rollback(self, *, force: bool = False) -> str | None:
        """Return to the baseline; refused when policy forbids it, unless ``force``."""
        with self.cycle_lock():
            return self._rollback(force=force)

    def _rollback(self, *, force: bool) -> str | None:
        self.activator.recover()
        state = self.load_state()
        if not self.policy(state).rapid_security_response_enable_rollback and not force:
            raise Forbidden(
                "policy sets RapidSecurityResponse.EnableRollback to false",
                hint="an administrator can override with --force",
            )
        active = self.activator.active()
        if active is None:
            return None
        manifest, _ = self._load_staged(active)
        drift = self.drift(manifest)
        if drift and not force:
            raise Forbidden(
                f"files {active} manages were changed by something else: " + "; ".join(drift),
                hint="restore them, or 'bsi agent rollback --force' to put the baseline's bytes "
                f"back in all {len(manifest.files)} file(s) of {active} (those changes are "
                "discarded) and forget the supplement",
            )
        # Recorded before the files move: a kill mid-way is finished by the
        # next cycle, never undone, and the agent does not put it straight back.
        previous = (dict(state.failures), state.last_good, state.pending_commit)
        state.failures[active] = {
            "kind": REMOVED,
            "reason": "removed by an administrator (bsi agent rollback)",
            "at": self.clock().isoformat(),
        }
        state.last_good = None
        self.save_state(state)
        try:
            self._swap(manifest, state, activate=False, force=force)
        except BsiError:
            if self.activator.active() == active:  # refused: nothing changed
                state.failures, state.last_good, state.pending_commit = previous
                self.save_state(state)
            raise
        self._relaunch([manifest], state)
        self._prune(state)
        if state.credential:
            client = self._client(state)
            try:
                client.run(self._report_rolled_back(client.conversation, state))
            finally:
                client.close()
        return active

    def _report_rolled_back(self, conversation: Conversation, state: LocalState) -> Exchange[None]:
        """The report after a rollback: installed packages are read for every name the
        device's catalogue names, as a cycle reads them. Read for no catalogue (the
        active supplement's names alone, and none is active now), the report listed no
        packages, and the server took the host, back on its base packages, for one
        that runs none of them: up to date, until the next cycle."""
        facts, active = self.facts()
        found = yield from conversation.device_catalog(facts.platform)
        facts = self._with_packages(facts, found.catalog, active)
        yield from self._report(conversation, facts, active, InstallState.NONE, state, None)

    def status(self) -> dict[str, Any]:
        state = self.load_state()
        facts, active = self.facts()
        return {
            "device_id": state.device_id or None,
            "server": state.server_url or None,
            "platform": facts.platform,
            "version": str(facts.product_version),
            "build": str(facts.build) if facts.build else None,
            "packages": [p.display() for p in facts.packages or ()],
            "active_supplement": active.display() if active else None,
            "drift": self.drift(active),
            "staged": sorted(str(b) for b in self._staged_builds()),
            "restart_pending": bool(state.restart_pending),
            "restart_pending_processes": state.restart_pending_processes,
            "pending_commit": state.pending_commit,
            "last_good": state.last_good,
            "last_failure": state.last_failure,
            "failed_builds": {build: state.failures[build] for build in sorted(state.failures)},
        }
