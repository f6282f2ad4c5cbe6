"""The server's application logic, between HTTP and the Store.

It owns the caches that make a check-in cheap. A group's declaration set
(and the policy it implies) and the catalogue are cached for ``cache_seconds``;
a device credential's identity for ``identity_seconds``. Writes through this
process drop the affected entries at once; other server processes behind the
same database see them within the cache time, which is what lets any number
of stateless processes share one database.

Check-ins record ``last_seen`` in memory; :meth:`BsiService.flush_last_seen`
writes them in one batch (the app calls it every few seconds), so an
unchanged check-in never writes to the database.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bsi.domain.affected import EVERYONE, NOBODY, Affected, catalogue_change, changed_keys
from bsi.domain.catalog import Catalog, Supplement, SupplementState
from bsi.domain.compliance import ComplianceSummary, FleetGroup, summarize
from bsi.domain.containers import CONTAINERS_ITEM, ContainerFacts, read_container_items
from bsi.domain.ddm import (
    BSI_STATUS_ITEMS,
    DeclarationSet,
    check_enrollment_id,
    declaration_set,
    subscription_items,
    tokens_response,
)
from bsi.domain.declarations import (
    SYSTEM,
    USER,
    Declaration,
    declaration_from_admin,
    effective_policy,
)
from bsi.domain.eligibility import Decision, Outcome, Reason, decide, unknown, with_containers
from bsi.domain.events import AUTOMATIC
from bsi.domain.patch_window import PatchWindow, percentiles, posting_instant
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.rollout import NO_HOLDS, DeviceHolds, localized
from bsi.domain.status import (
    DeviceState,
    StatusReport,
    identity_contradictions,
    invalid_decision_items,
    merge_status,
    parse_status_report,
)
from bsi.domain.versions import ProductVersion
from bsi.errors import (
    BsiError,
    Conflict,
    Forbidden,
    IdentityMismatch,
    InvalidInput,
    InvalidVersion,
    NotFound,
)
from bsi.server import credentials
from bsi.server.limits import RateLimit
from bsi.server.linux_catalog import catalog_from_repository
from bsi.server.revocations import Revocations
from bsi.server.rollouts import RolloutInputs, Rollouts, device_events
from bsi.server.status_writer import Merged, StatusStored, StatusWriter
from bsi.server.webhooks import Webhooks
from bsi.store.protocols import Stores
from bsi.store.store import (
    DecidedDevice,
    DecisionCounts,
    DecisionGroup,
    DeviceFilter,
    DeviceIdentity,
    DeviceRecord,
    DeviceStateRow,
    Enrollment,
    LatestRetries,
    NewEnrollment,
    SecurityEventRecord,
    StoredStatus,
)

Clock = Callable[[], datetime]
CREDENTIAL_KEY = "device-credentials"
SECURITY_EVENT_WINDOW = 600.0
"""Seconds during which a repeat of one security event (kind, enrollment) is logged only."""
SECURITY_EVENTS_PER_MINUTE = 120
"""Security events stored per process and minute; beyond that they are logged only."""
log = logging.getLogger("bsi.security")
STATUS_COST_BYTES = 64 * 1024
"""Status report body bytes one rate-limit token pays for."""
STATUS_WRITE_TIMEOUT = 60.0
"""Seconds a report waits for its write before the device is told to retry."""


RECOMPUTE_BATCH = 500
"""Devices a decision pass reads, decides and writes per batch (one read, one write)."""
RECOMPUTE_YIELD = 1.0
"""After each batch a decision pass sleeps this many times as long as the batch took,
so check-ins have the database and the interpreter at least half of the time."""
STALE_ATTEMPTS = 3
"""Times a pass decides again the devices that reported while their decision was made."""
DecideElsewhere = Callable[[Affected, datetime, Callable[[int], None]], tuple[int, frozenset[str]]]
"""A decision pass run elsewhere: the devices it affects, the instant it decides at, a
callback told how many are decided so far; returns what :meth:`BsiService.decide_here`
returns."""
_WHAT_CHANGED = "what changed"
"""What a pass decides for, as the admin is told, before it has read what changed."""


@dataclass(frozen=True, slots=True)
class _DecisionInputs:
    """Every input of the stored decisions but each device's state and the time."""

    catalog: Catalog
    groups: dict[int, str]
    """Every group's name by id (a device's late rollout wave is drawn by its name)."""
    policies: dict[int, SoftwareUpdatePolicy]
    """Each group's policy, without any device's own wave declarations (see ``rollouts``)."""
    rollouts: RolloutInputs

    def affects_since(self, before: _DecisionInputs | None) -> Affected:
        """The devices whose decision the change from ``before`` (None: unknown) can alter."""
        if before is None:
            return EVERYONE
        return catalogue_change(before.catalog, self.catalog) | Affected(
            platforms=changed_keys(before.rollouts.by_platform, self.rollouts.by_platform),
            groups=changed_keys(before.groups, self.groups)
            | changed_keys(before.policies, self.policies)
            | changed_keys(before.rollouts.windows, self.rollouts.windows),
        )


@dataclass(slots=True)
class _Progress:
    """A decision pass under way (:meth:`BsiService.recomputing`)."""

    affects: str
    devices: int | None
    """None while the pass reads what changed and counts the devices it affects (seconds
    at a million devices), before its first batch."""
    started_at: datetime
    decided: int = 0


@dataclass(frozen=True, slots=True)
class GroupView:
    """What one group's devices are served, precomputed once per change."""

    declarations: DeclarationSet
    policy: SoftwareUpdatePolicy
    tokens_body: bytes


@dataclass(frozen=True, slots=True)
class DeviceCatalog:
    """What a device's catalogue answer (``GET /v1/ddm/catalog``) is made of."""

    catalog: Catalog
    """The served catalogue, every platform's."""
    holds: DeviceHolds
    """What holds the device back on the platform it asked for."""
    latest_retry: int
    """Its newest retry allowance's id (0: none)."""


_CATALOG, _RETRIES = "catalog", "retries"
"""The served catalogue's and the retry allowances' keys in the catalogue cache."""


@dataclass(slots=True)
class _Cached:
    value: Any
    expires: float


@dataclass(slots=True)
class _TtlCache:
    """Values kept for ``seconds``, each miss loaded once.

    Callers that miss a key while another thread loads it wait for that load
    instead of loading it too: when a view expired under load, every request
    thread went to the database for it at once (issue 18, "each process re-read
    the group view and catalogue on cache expiry"). A load that a :meth:`drop`
    overtook is returned to its callers but not kept.
    """

    seconds: float
    entries: dict[Any, _Cached] = field(default_factory=dict)
    _loading: dict[Any, threading.Lock] = field(default_factory=dict)
    _overtaken: set[Any] = field(default_factory=set)
    """Keys dropped while they were being loaded."""
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _generation: int = 0
    """Moves on at each drop of every key."""

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        hit = self.peek(key)
        if hit is not None:
            return hit.value
        with self._guard:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            hit = self.peek(key)  # loaded by the thread this one waited for
            if hit is not None:
                return hit.value
            generation, started = self._generation, time.monotonic()
            try:
                value = load()
            finally:
                with self._guard:
                    self._loading.pop(key, None)
                    overtaken = key in self._overtaken or generation != self._generation
                    self._overtaken.discard(key)
            if not overtaken:
                with self._guard:
                    if len(self.entries) > 200_000:
                        self.entries.clear()
                    self.entries[key] = _Cached(value, started + self.seconds)
            return value

    def peek(self, key: Any) -> _Cached | None:
        """The live entry for ``key`` without loading: lets async callers skip a thread hop."""
        hit = self.entries.get(key)
        return hit if hit is not None and hit.expires > time.monotonic() else None

    def drop(self, key: Any = None) -> None:
        with self._guard:
            if key is None:
                self._generation += 1
                self.entries.clear()
                return
            self.entries.pop(key, None)
            if key in self._loading:
                self._overtaken.add(key)


class _Coalesced:
    """Runs ``work`` on one background thread; calls while it runs coalesce into one
    more run after it, so a burst of changes costs at most two runs, never a queue."""

    def __init__(self, work: Callable[[], object], name: str) -> None:
        self._work = work
        self._name = name
        self._lock = threading.Lock()
        self._wanted = False
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            self._wanted = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._wanted:
                    self._thread = None
                    return
                self._wanted = False
            try:
                self._work()
            except Exception:
                log.exception(
                    "%s failed; the next change or rollout tick runs it again", self._name
                )

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the runs requested so far (a server that stops)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)


class BsiService:
    """The server's operations; HTTP routes call these, never a store.

    It depends on one narrow store per concern (:class:`~bsi.store.protocols.Stores`);
    ``Stores.sharing(store)`` lets one database serve them all.
    """

    def __init__(
        self,
        stores: Stores,
        clock: Clock,
        *,
        cache_seconds: float,
        identity_seconds: float,
        status_burst: float,
        status_per_second: float,
    ) -> None:
        self.stores = stores
        """For the composition root and tests; routes go through the methods below."""
        self._devices = stores.devices
        self._catalogue = stores.catalog
        self._declarations = stores.declarations
        self._credentials = stores.credentials
        self._events = stores.events
        self.clock = clock
        self._groups = _TtlCache(cache_seconds)
        self._catalog = _TtlCache(cache_seconds)
        self._identities = _TtlCache(identity_seconds)
        self._last_seen: dict[str, datetime] = {}
        self._last_seen_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._credential_key: bytes | None = None
        # A failure under a running rollout may halt it: decided after each batch, not at
        # the next tick (``self.rollouts`` is set further down, hence the lambda).
        self._writer = StatusWriter(
            stores.devices, clock, written=lambda events: self.rollouts.react(events)
        )
        self._events_logged: dict[tuple[str, str | None], float] = {}
        self._events_stored: collections.deque[float] = collections.deque()
        self._status_limit = RateLimit(status_burst, status_per_second, "status reports")
        self._recompute_soon = _Coalesced(self.recompute_changed, "deciding again")
        self._pass_lock = threading.Lock()
        """Held by the decision pass under way (one at a time)."""
        self._pending_lock = threading.Lock()
        self._pending: Affected = NOBODY
        """Devices to decide again at the next pass, beyond what changed inputs affect."""
        self._again = False
        """A pass was asked for while one ran: its thread runs one more."""
        self._decided: _DecisionInputs | None = None
        """The inputs of the last finished pass: what a change is compared with."""
        self._progress: _Progress | None = None
        self.decide_elsewhere: DecideElsewhere | None = None
        """Runs a pass over many devices outside this process (the composition root sets
        it: :func:`bsi.server.decision_process.decide_in_child`); None: every pass runs
        in this process."""
        self.decide_elsewhere_from = 0
        """How many devices a pass must affect to run in :attr:`decide_elsewhere`."""
        self.revocations = Revocations(stores.credentials)
        self.on_change: Callable[[], None] = self._generation_moved_on
        """Called after any change that may alter what devices should run: the server's
        wake-ups (:meth:`bsi.server.wakeup.Wakeups.bump`), which move the shared
        generation on. Until they are wired (a catalogue synced as the server starts),
        the generation is moved on alone."""
        self.repository_seen: frozenset[str] | None = None
        """The hosted TUF repository's targets versions when it was last read."""
        self.rollouts = Rollouts(
            stores.rollouts,
            clock,
            self.catalog,
            self.set_supplement_state,
            lambda: self.on_change(),
            recompute=self.recompute_changed,
            recompute_soon=self.recompute_decisions_soon,
            declarations=lambda: [d for d, _ in self._declarations.declarations()],
            issue=self._issue_declaration,
            retract=self._retract_declaration,
            redeclare=self._declarations_changed,
            cache_seconds=cache_seconds,
        )
        """Rollouts, maintenance windows and the event history (bsi.server.rollouts)."""
        self.webhooks = Webhooks(stores.rollouts, clock)
        """Signed POSTs of the events an on-call person acts on (bsi.server.webhooks)."""

    def _issue_declaration(self, declaration: Declaration, groups: frozenset[str]) -> None:
        """Serve bsi's own ``declaration`` (an Apple wave's enforcement) to ``groups``."""
        self._declarations.put_declaration(declaration, self.clock())
        for group in sorted(groups):
            self._declarations.assign(declaration.identifier, group, assigned=True)
        self._declarations_changed()

    def _retract_declaration(self, identifier: str) -> None:
        try:
            self._declarations.delete_declaration(identifier)
        except NotFound:
            return
        self._declarations_changed()

    # -- identities --------------------------------------------------------

    @property
    def credential_key(self) -> bytes:
        if self._credential_key is None:
            self._credential_key = self._credentials.shared_secret(CREDENTIAL_KEY)
        return self._credential_key

    def enroll(self, token: str) -> tuple[str, str]:
        key = self.credential_key
        return self._credentials.enroll(
            token, self.clock(), lambda device, group: credentials.issue(key, device, group)
        )

    def device_for_credential(self, credential: str) -> DeviceIdentity | None:
        """One HMAC: signed credentials need no database read."""
        return credentials.verify(self.credential_key, credential)

    def cached_device_for_credential(self, credential: str) -> tuple[bool, DeviceIdentity | None]:
        """(known without I/O, identity): true once the shared key is loaded."""
        if self._credential_key is None:
            return False, None
        return True, credentials.verify(self._credential_key, credential)

    def admitted(
        self, identity: DeviceIdentity | None, *, by_credential: bool = True
    ) -> DeviceIdentity | None:
        """``identity`` unless its device is revoked or decommissioned, or (for a bsi
        credential) a re-enrolment replaced the credential it proved: then None.
        Every process knows within one revocation poll."""
        if identity is None or not self.revocations.allows(identity, by_credential=by_credential):
            return None
        return identity

    def revoke_device(self, device_id: str) -> None:
        self._credentials.revoke_device(device_id, self.clock())
        self._lifecycle_changed(device_id)

    def decommission_device(self, device_id: str) -> None:
        self._credentials.decommission_device(device_id, self.clock())
        self._lifecycle_changed(device_id)

    def reenroll_device(self, device_id: str) -> str:
        """A new credential for ``device_id``; its earlier ones are refused from now on."""
        key = self.credential_key
        credential = self._credentials.reenroll_device(
            device_id,
            self.clock(),
            lambda device, group, generation: credentials.issue(key, device, group, generation),
        )
        self._lifecycle_changed(device_id)
        return credential

    def _lifecycle_changed(self, device_id: str) -> None:
        self.revocations.refresh()
        self._identities.drop(("enrollment", device_id))

    def cached_group_view(self, identity: DeviceIdentity) -> GroupView | None:
        """What :meth:`identity_view` serves ``identity``, when everything it needs is in
        memory and current; None otherwise (the caller asks :meth:`identity_view` in a
        worker thread). No I/O and no lock held across a read: the event loop asks."""
        own: tuple[Declaration, ...] | None = ()
        if identity.channel is None:
            own = self.rollouts.cached_wave_declarations(identity.device_id, identity.group_id)
            if own is None:
                return None
        hit = self._groups.peek((*_view_key(identity), own))
        return None if hit is None else hit.value

    def _own_declarations(self, identity: DeviceIdentity) -> tuple[Declaration, ...]:
        """What the device channel is served beyond its group's: the Apple rollout waves
        it was drawn into (:meth:`bsi.server.rollouts.Rollouts.wave_declarations`)."""
        if identity.channel is not None:
            return ()
        return self.rollouts.wave_declarations(identity.device_id, identity.group_id)

    # -- enrollments NanoMDM forwards -----------------------------------------

    def enrollment(self, enrollment_id: str) -> Enrollment | None:
        found: Enrollment | None = self._identities.get(
            ("enrollment", enrollment_id), lambda: self._devices.enrollment(enrollment_id)
        )
        return found

    def identify_forwarded(
        self,
        enrollment_id: str,
        enrollment_type: str | None,
        parent_id: str | None,
        source: str | None,
    ) -> DeviceIdentity:
        """The device (or user channel) NanoMDM forwards for, if bsi knows it.

        Never registers: an enrollment id is known because NanoMDM's webhook
        or an admin said so. Headers that contradict how it is known (a
        channel without its parent, another parent, another type) are refused
        as a security event, as is an unknown id.
        """
        check_enrollment_id(enrollment_id)
        found = self.enrollment(enrollment_id)
        if found is None:
            self.security_event(
                "unknown-enrollment", enrollment_id, source, "DDM request for an unknown enrollment"
            )
            raise Forbidden(
                f"enrollment {enrollment_id!r} is not known to bsi",
                hint="NanoMDM's webhook (-webhook-url .../v1/nanomdm/webhook) announces "
                "enrollments; or import it: POST /v1/admin/enrollments",
            )
        if found.checked_out_at is not None:
            raise Forbidden(
                f"enrollment {enrollment_id!r} checked out at {found.checked_out_at.isoformat()}",
                hint="it is known again once NanoMDM reports its next Authenticate or TokenUpdate",
            )
        expected_parent = found.identity.device_id if found.identity.channel else None
        problems = []
        if (parent_id or None) != expected_parent:
            problems.append(f"X-Enrollment-ParentID {parent_id!r}, expected {expected_parent!r}")
        if enrollment_type and found.enrollment_type and enrollment_type != found.enrollment_type:
            problems.append(
                f"X-Enrollment-Type {enrollment_type!r}, known as {found.enrollment_type!r}"
            )
        if problems:
            detail = "; ".join(problems)
            self.security_event("enrollment-mismatch", enrollment_id, source, detail)
            raise IdentityMismatch(f"enrollment {enrollment_id!r}: {detail}")
        if found.identity.channel is not None:
            return found.identity
        version = _version(found.product_version)
        items = subscription_items(found.platform, version, found.status_capabilities)
        return replace(found.identity, subscription=items)

    def register_enrollments(self, entries: Sequence[NewEnrollment]) -> int:
        """Make enrollments known (NanoMDM's webhook, an admin import); returns how many are new."""
        for entry in entries:
            check_enrollment_id(entry.enrollment_id)
            if entry.parent_id:
                check_enrollment_id(entry.parent_id)
        created = self._devices.register_enrollments(entries, self.clock())
        for entry in entries:
            self._identities.drop(("enrollment", entry.enrollment_id))
        return created

    def import_inventory(
        self, records: Sequence[tuple[str, str, object]], group: str | None
    ) -> int:
        """Devices known from another inventory (MDM, osquery): registered, then reported.

        ``records``: (device id, where the record is in the upload, its DDM report).
        Every device id, report and the hardware a known device is bound to are checked
        before anything is stored, so a bad record refuses the upload whole, its error
        prefixed by its place (``body[3]: ...``). Returns how many devices were new.
        """
        for device_id, location, body in records:
            try:
                check_enrollment_id(device_id)
                report = parse_status_report(body)
                try:
                    _check_identity(report, *_bound(self._devices.enrollment(device_id)))
                except IdentityMismatch as error:
                    raise IdentityMismatch(f"device {device_id!r}: {error.message}") from None
            except BsiError as error:
                raise type(error)(f"{location}: {error.message}", hint=error.hint) from None
        reports = [(device_id, body) for device_id, _location, body in records]
        created = self.register_enrollments(
            [NewEnrollment(d, group=group, enrolled_by="inventory") for d in dict(reports)]
        )
        for device_id, body in reports:
            identity = self._devices.device_identity(device_id)
            assert identity is not None
            self.report_status(identity, body)
        return created

    def report_device_information(self, enrollment_id: str, report: object) -> None:
        """A ``DeviceInformation`` result NanoMDM relayed, stored as the device's report."""
        found = self._devices.enrollment(enrollment_id)
        if found is None or found.identity.channel is not None:
            raise NotFound(f"no device enrollment {enrollment_id!r}")
        self.report_status(found.identity, report, "nanomdm-webhook")

    def check_out(self, enrollment_id: str) -> None:
        identity = self._devices.check_out(enrollment_id, self.clock())
        self._identities.drop()  # a device's channels are checked out with it
        if identity.channel is None:
            self._identities.drop(("enrollment", identity.device_id))

    def security_event(
        self, kind: str, enrollment_id: str | None, source: str | None, detail: str
    ) -> None:
        """Log and keep a refused impersonation attempt; one per kind and id per window."""
        log.warning(
            "security event %s: enrollment %r from %s: %s", kind, enrollment_id, source, detail
        )
        now = time.monotonic()
        key = (kind, enrollment_id)
        with self._last_seen_lock:
            if self._events_logged.get(key, -SECURITY_EVENT_WINDOW) > now - SECURITY_EVENT_WINDOW:
                return
            while self._events_stored and self._events_stored[0] < now - 60:
                self._events_stored.popleft()
            if len(self._events_stored) >= SECURITY_EVENTS_PER_MINUTE:
                return  # a flood (made-up ids): logged above, not stored row by row
            if len(self._events_logged) > 10_000:
                self._events_logged.clear()
            self._events_logged[key] = now
            self._events_stored.append(now)
        self._events.record_security_event(kind, enrollment_id, source, detail, self.clock())

    # -- check-ins ---------------------------------------------------------

    def identity_view(self, identity: DeviceIdentity) -> GroupView:
        """What this device (or user channel) is served."""
        return self.group_view(*_view_key(identity), self._own_declarations(identity))

    def group_view(
        self,
        group_id: int,
        scope: str = SYSTEM,
        items: tuple[str, ...] = BSI_STATUS_ITEMS,
        own: tuple[Declaration, ...] = (),
    ) -> GroupView:
        """What a group's channels of ``scope`` subscribed to ``items`` are served, cached;
        ``own``: declarations a device is served beyond its group's (its rollout waves)."""
        key = (group_id, scope, items, own)
        view: GroupView = self._groups.get(key, lambda: self._load_group(*key))
        return view

    def _load_group(
        self, group_id: int, scope: str, items: tuple[str, ...], own: tuple[Declaration, ...]
    ) -> GroupView:
        # A wave's deadline is served in the group's window time zone (bsi.domain.rollout).
        zone = self.rollouts.timezone(group_id)
        assigned = [localized(d, zone) for d in self._declarations.group_declarations(group_id)]
        served = declaration_set(str(group_id), [*assigned, *own], scope, items)
        variant = hashlib.sha256(
            "\n".join([*items, *(f"{d.identifier}\0{d.server_token}" for d in own)]).encode()
        ).hexdigest()[:16]
        changed_at = self._declarations.sync_changed_at(
            f"group:{group_id}:{scope}:{variant}", served.token, self.clock()
        )
        body = json.dumps(tokens_response(served, changed_at)).encode()
        return GroupView(served, effective_policy([*assigned, *own]), body)

    def saw(self, device_id: str) -> None:
        with self._last_seen_lock:
            self._last_seen[device_id] = self.clock()

    def flush_last_seen(self) -> int:
        """Write the buffered check-in times; on failure keep them for the next try.

        One flush at a time: a flush that finds another under way waits for it, so that
        when it returns every check-in seen before it was called is written (it could
        return while the other one's write was still open)."""
        with self._flush_lock:
            with self._last_seen_lock:
                pending, self._last_seen = self._last_seen, {}
            try:
                self._devices.touch_devices(pending)
            except Exception:
                with self._last_seen_lock:
                    for device, when in pending.items():
                        self._last_seen.setdefault(device, when)
                raise
            return len(pending)

    def catalog(self) -> Catalog:
        catalog: Catalog = self._catalog.get(_CATALOG, self._catalogue.catalog)
        return catalog

    def admit_status(self, device_id: str, body_bytes: int) -> None:
        """The per-device rate limit on status reports, checked before the body is read.

        A report costs one token per started :data:`STATUS_COST_BYTES` of body.
        Raises TooManyRequests (429 with Retry-After) once a device has spent
        its burst; it refills at ``status_per_second``. Kept per process: N
        server processes admit at most N times the rate.
        """
        cost = 1 + max(0, body_bytes - 1) // STATUS_COST_BYTES
        self._status_limit.admit(device_id, time.monotonic(), cost)

    def report_status(
        self, identity: DeviceIdentity, body: object, source: str | None = None
    ) -> DeviceState:
        """Validate, merge and store a status report, deciding for the device anew; returns
        the device's (or user channel's) state after it.

        A report naming other hardware (``device.identifier.udid`` or
        ``serial-number``) than the enrollment's is refused whole and kept as
        a security event. A user channel's report is stored on that channel
        only: the device channel is the one authority on the device's OS.
        A device channel's report goes through the status writer
        (:meth:`submit_status`); this waits for it at most
        :data:`STATUS_WRITE_TIMEOUT` seconds (then ``TimeoutError``: 503).
        """
        if identity.channel is None:
            return self.submit_status(identity, body, source).result(STATUS_WRITE_TIMEOUT)
        report = parse_status_report(body)
        known = self.enrollment(identity.device_id)

        def merge_channel(previous: DeviceState | None) -> DeviceState:
            _check_identity(report, *_bound(known))
            return merge_status(previous, report)

        try:
            self._devices.save_channel_state(identity.channel, merge_channel, self.clock())
        except IdentityMismatch as error:
            self._contradicted(identity, source, error)
            raise
        return merge_status(None, report)

    def submit_status(
        self, identity: DeviceIdentity, body: object, source: str | None = None
    ) -> Future[DeviceState]:
        """Validate a device channel's status report here (raises InvalidStatusReport at
        once, nothing queued) and queue it for the status writer, which reads, merges and
        stores it with the reports that arrived with it (bsi.server.status_writer).

        The future holds the device's state once the report is stored, or its error. The
        merge reads the group view, catalogue and holds at merge time (cached), after the
        device's state: a decision pass that ran since decides from what it reads. A report
        that changes neither the state nor the decision writes nothing: the device is only
        marked seen, as a check-in is. After a batch's write, a failure under a running
        rollout may halt it (decided now, not at the next tick: one look at the running
        rollouts per batch), and the device's cached identity is dropped (its OS or
        capabilities may have changed, and with them its subscription).
        Cheap enough for the event loop: no I/O here.
        """
        if identity.channel is not None:
            raise ValueError("a user channel's report is stored by report_status")
        report = parse_status_report(body)
        now = self.clock()
        device_id = identity.device_id

        def merge(stored: StoredStatus) -> Merged:
            previous = stored.state
            _check_identity(
                report,
                stored.udid or (previous.udid if previous else None),
                stored.serial_number or (previous.serial_number if previous else None),
            )
            view = self.identity_view(identity)  # with its own wave enforcements
            catalog = self.catalog()
            state = merge_status(previous, report)
            holds = self.rollouts.holds(device_id, identity.group_id, state.platform)
            events = tuple(device_events(device_id, previous, state, catalog, now))
            return state, _decision(state, catalog, view.policy, now, holds), events

        def finish(outcome: StatusStored | BsiError) -> None:
            if isinstance(outcome, IdentityMismatch):
                self._contradicted(identity, source, outcome)
            if isinstance(outcome, BsiError):
                return
            if not outcome.written:
                self.saw(device_id)
                return
            self._identities.drop(("enrollment", device_id))

        return self._writer.submit(device_id, merge, finish)

    def _contradicted(
        self, identity: DeviceIdentity, source: str | None, error: IdentityMismatch
    ) -> None:
        """Keep a report refused for naming other hardware as a security event."""
        enrollment_id = identity.channel or identity.device_id
        self.security_event("identity-contradiction", enrollment_id, source, error.message)

    def device_state(self, device_id: str) -> DeviceState | None:
        found = self._devices.device_status(device_id)
        if not found or not found[0]:
            return None
        return DeviceState(found[0], tuple(found[1]))

    # -- admin -------------------------------------------------------------

    def require_current_schema(self) -> None:
        """Readiness: raises DatabaseError unless the database answers with the current schema."""
        self.stores.database.require_current_schema()

    def checkpoint_database(self) -> None:
        """SQLite's log into its database file, off the status writer's path (the server
        calls it every :data:`~bsi.store.database.CHECKPOINT_SECONDS`)."""
        self.stores.database.checkpoint()

    def close(self) -> None:
        """Close the database's pooled connections (a server that stops, a test), once a
        background decision pass under way has ended (at most 30 s)."""
        self._recompute_soon.wait(30.0)
        self.stores.database.dispose()

    def api_key_role(self, secret: str) -> str | None:
        """The role of an unrevoked admin API key; None for any other secret."""
        return self._credentials.api_key_role(secret)

    def create_api_key(self, name: str, role: str) -> str:
        """A new API key, returned once (only its hash is stored)."""
        return self._credentials.create_api_key(name, role, self.clock())

    def create_enrollment_token(
        self, group: str, valid_for: timedelta, max_uses: int | None
    ) -> tuple[str, datetime]:
        """A new enrollment token for ``group`` (returned once) and when it expires."""
        now = self.clock()
        expires = now + valid_for
        return self._credentials.create_enrollment_token(group, expires, max_uses, now), expires

    def group_names(self) -> list[str]:
        """Every device group's name, sorted."""
        return sorted(self._declarations.groups().values())

    def create_group(self, name: str) -> None:
        """Create the device group ``name``; an existing one is left as it is."""
        self._declarations.ensure_group(name, self.clock())

    def declarations(self) -> list[tuple[Declaration, list[str]]]:
        """Every declaration with the names of the groups it is assigned to."""
        return self._declarations.declarations()

    def list_devices(
        self, filters: DeviceFilter, *, after: str | None, limit: int
    ) -> list[DeviceRecord]:
        """Devices matching ``filters``, ordered by id, from just after ``after``."""
        return self._devices.list_devices(filters, after=after, limit=limit)

    def device(self, device_id: str) -> tuple[DeviceRecord, dict[str, Any], dict[str, Any]]:
        """A device's record, its status items, and its detail (identity, findings, channels;
        for a container host ``containers``, each running container's decision).

        Raises NotFound for an unknown device.
        """
        record, items = self._devices.get_device(device_id)
        detail = self._devices.device_detail(device_id)
        if CONTAINERS_ITEM in items:
            detail["containers"] = self._container_decisions(record, items, detail)
        return record, items, detail

    def _container_decisions(
        self, record: DeviceRecord, items: dict[str, Any], detail: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Each running container of the host as decided now, the way its stored counts
        were: ``{"name", "supplemental_build", "outcome", "reason", "supplement_build",
        "message"}`` (compliance keeps only counts, so the names come from here)."""
        state = DeviceState(items, tuple(detail["status_errors"]), tuple(detail["status_invalid"]))
        group_id = self._declarations.group_id(record.group)
        holds = self.rollouts.holds(record.device_id, group_id, state.platform)
        policy = self._device_policy(record.device_id, group_id)
        decision = _decision(state, self.catalog(), policy, self.clock(), holds)
        return [
            {
                "name": c.name,
                "supplemental_build": str(c.installed_build) if c.installed_build else None,
                "outcome": c.decision.outcome.value,
                "reason": c.decision.reason.value,
                "supplement_build": (
                    str(c.decision.supplement.build) if c.decision.supplement else None
                ),
                "message": c.decision.message,
            }
            for c in decision.containers
        ]

    def decision_counts(self) -> DecisionCounts:
        """Devices per decision group, installed build included (not decommissioned)."""
        return self._devices.decision_counts()

    def security_events(self, limit: int) -> list[SecurityEventRecord]:
        """The newest ``limit`` security events, newest first."""
        return self._events.security_events(limit)

    def allow_retry(self, platform: str, build: str, device_id: str | None) -> int:
        """Allow ``build`` again on ``device_id`` (every device when None); the allowance's id.
        This process names it in its next catalogue answers at once; others within their
        cache time."""
        allowance = self._catalogue.allow_retry(platform, build, device_id, self.clock())
        self._catalog.drop(_RETRIES)
        return allowance

    def retries_after(self, device_id: str, after: int) -> list[tuple[int, str, str]]:
        """``(id, platform, build)`` of the retry allowances for the device above id ``after``."""
        return self._catalogue.retries_after(device_id, after)

    def latest_retry(self, device_id: str) -> int:
        """The newest retry allowance's id for the device (0: none): the catalogue names it."""
        latest: LatestRetries = self._catalog.get(_RETRIES, self._catalogue.latest_retries)
        return latest.of(device_id)

    def device_catalog(self, identity: DeviceIdentity, platform: str) -> DeviceCatalog:
        """What a device's catalogue answer is made of: the served catalogue, what holds the
        device back on ``platform``, and its newest retry allowance (cached; may read)."""
        return DeviceCatalog(
            self.catalog(),
            self.rollouts.holds(identity.device_id, identity.group_id, platform),
            self.latest_retry(identity.device_id),
        )

    def cached_device_catalog(
        self, identity: DeviceIdentity, platform: str
    ) -> DeviceCatalog | None:
        """:meth:`device_catalog` when all of it is in memory and current, else None (the
        caller asks :meth:`device_catalog` in a worker thread): the event loop asks."""
        catalog, retries = self._catalog.peek(_CATALOG), self._catalog.peek(_RETRIES)
        holds = self.rollouts.cached_holds(identity.device_id, identity.group_id, platform)
        if catalog is None or retries is None or holds is None:
            return None
        latest: LatestRetries = retries.value
        return DeviceCatalog(catalog.value, holds, latest.of(identity.device_id))

    def put_declaration(self, body: object) -> Declaration:
        declaration = declaration_from_admin(body)
        if declaration.identifier.startswith("bsi."):
            raise InvalidInput(
                f"identifier {declaration.identifier!r} is reserved",
                hint="identifiers starting with 'bsi.' are bsi's own declarations",
            )
        if self._declarations.put_declaration(declaration, self.clock()):
            self._declarations_changed()
        return declaration

    def delete_declaration(self, identifier: str) -> None:
        self._declarations.delete_declaration(identifier)
        self._declarations_changed()

    def assign(self, identifier: str, group: str, *, assigned: bool) -> None:
        self._declarations.assign(identifier, group, assigned=assigned)
        self._declarations_changed()

    def _declarations_changed(self) -> None:
        """Rebuild every view now, so each set's ``Timestamp`` is the time of the change."""
        served = set(self._groups.entries)
        self._groups.drop()
        for group_id in self._declarations.groups():
            served |= {(group_id, SYSTEM, BSI_STATUS_ITEMS), (group_id, USER, BSI_STATUS_ITEMS)}
        for key in served:
            if not key[3:4] or not key[3]:  # a device's own variant is rebuilt when asked for
                self.group_view(*key[:3])
        self.on_change()

    def import_catalog(self, catalog: Catalog, origin: str) -> Catalog:
        """Merge ``catalog`` over the stored one; a publisher's pause or withdrawal stays.
        A catalogue that adds or changes nothing stores nothing and wakes no device.

        Raises :class:`Conflict` (and changes nothing) when ``catalog`` gives a
        known Linux build another target SHA-256: a build's bytes are fixed
        when it is first published.
        """
        stored = self._catalogue.catalog()
        conflicts = stored.republished(catalog)
        if conflicts:
            raise Conflict(
                "; ".join(_republished(known, new, origin) for known, new in conflicts)
                + ": nothing was imported",
                hint="publish new bytes under a new supplemental build (a new letter)",
            )
        merged = stored.merged(catalog)
        if merged == stored:
            # Nothing new: no write, and no wake-up. A published repository is read by
            # both its sync and the server's own watcher; waking every device for the
            # second read sent each waiting device through a check-in again (issue 18).
            return merged
        known = {(s.platform, s.build) for s in stored.supplements}
        # A new supplement's default-plan rollout exists before the catalogue lists it:
        # a device checking in between would otherwise find it with no gate and install.
        started = [
            rollout
            for new in merged.supplements
            if (new.platform, new.build) not in known
            and (rollout := self.rollouts.started_with_default(new.platform, str(new.build)))
        ]
        self._catalogue.replace_catalog(merged, origin)
        self._catalog.drop()
        for rollout in started:
            self.rollouts.steer(rollout)  # an Apple wave's declaration names the listed build
        self.on_change()
        return merged

    def sync_repository(self, repo_dir: Path) -> Catalog:
        """Add the supplements the hosted TUF repository signs to the catalogue.

        A known build the repository now signs with other bytes is refused:
        it is paused first, the rest is imported, a ``republished-build``
        security event is kept, and :class:`Conflict` names both SHA-256
        digests. Devices never install the other bytes, paused or not: the
        catalogue keeps the first digest, and the agent refuses a target
        signed with any other (see ``bsi.agent.runner``).
        """
        incoming = catalog_from_repository(repo_dir)
        conflicts = self._catalogue.catalog().republished(incoming)
        origin = f"TUF repository {repo_dir}"
        for known, _ in conflicts:
            if known.published_state is SupplementState.PUBLISHED:
                self.set_supplement_state(known.platform, str(known.build), SupplementState.PAUSED)
        merged = self.import_catalog(incoming.without(new for _, new in conflicts), origin)
        if not conflicts:
            return merged
        details = [_republished(known, new, origin) for known, new in conflicts]
        for detail in details:
            self.security_event("republished-build", None, str(repo_dir), detail)
        raise Conflict(
            "; ".join(details) + ": a supplemental build is never re-published with different "
            "bytes, so it is paused and the new bytes are not offered",
            hint="publish the new content under a new supplemental build (a new letter); "
            "restore the repository's earlier targets, or withdraw the build",
        )

    def set_supplement_state(
        self, platform: str, build: str, state: SupplementState, actor: str = AUTOMATIC
    ) -> None:
        """Pause, resume or withdraw a supplement; kept as an event of ``actor``."""
        self._catalogue.set_supplement_state(platform, build, state)
        self.rollouts.supplement_changed(platform, build, state, actor)
        self._catalog.drop()
        self.on_change()

    def _device_policy(self, device_id: str, group_id: int) -> SoftwareUpdatePolicy:
        """The policy a device is decided under: its group's, with its own wave enforcements."""
        own = self.rollouts.wave_declarations(device_id, group_id)
        return self.group_view(group_id, own=own).policy

    def changed_elsewhere(self) -> None:
        """Something devices should run may have changed through another process (its
        wake-up was heard): drop this process's cached catalogue, group views and
        rollouts, so the next check-in reads them. Called on the event loop."""
        self._catalog.drop()
        self._groups.drop()
        self.rollouts.forget()

    def recompute_decisions(self, affected: Affected = EVERYONE) -> int:
        """Decide again, now, for the devices ``affected`` names (every device unless
        told), with those :meth:`recompute_changed` would; returns how many decisions
        were stored."""
        with self._pending_lock:
            self._pending |= affected
        return self.recompute_changed()

    def recompute_changed(self, *, wait: bool = True) -> int:
        """Decide again for the devices whose decision changed inputs can alter since
        the last pass of this process (:mod:`bsi.domain.affected`): the catalogue (by
        platform), a group's policy or maintenance window (by group), a rollout (by
        platform), a group's name (by group); every device on the first pass, or when
        the platforms the catalogue knows or its model table changed (fail closed).
        Returns how many decisions were stored.

        Runs off the request path: in batches of :data:`RECOMPUTE_BATCH`, each
        followed by a pause of :data:`RECOMPUTE_YIELD` times its own duration, so
        check-ins keep the database and the interpreter meanwhile. One pass runs at a
        time; changes made while it runs are decided by one more pass, one for all of
        them: with ``wait`` the caller waits for the running pass and then runs it;
        without, the running pass's thread runs it when it is done and the caller
        returns 0 at once (an admin change's background task: a burst of changes
        during a long pass holds no thread each). Each decision is stored only if the
        device's state is still the one it was decided from
        (:meth:`bsi.store.store.Store.store_decisions`); a device that reported
        meanwhile is read and decided again. :meth:`recomputing` shows the pass.
        """
        with self._pending_lock:
            acquired = self._pass_lock.acquire(blocking=False)
            if not acquired and not wait:
                self._again = True  # read under this lock before the pass lock is let go
                return 0
        if not acquired:
            self._pass_lock.acquire()
        decided = 0
        try:
            while True:
                decided += self._pass()
                with self._pending_lock:
                    if not self._again:
                        self._pass_lock.release()
                        return decided
                    self._again = False
        except BaseException:
            self._pass_lock.release()
            raise

    def _pass(self) -> int:
        """One decision pass (:meth:`recompute_changed`), under the pass lock."""
        with self._pending_lock:
            wanted, self._pending = self._pending, NOBODY
            progress = _Progress(wanted.describe() if wanted else _WHAT_CHANGED, None, self.clock())
            self._progress = progress  # shown from the instant it takes its devices
        try:
            generation = self.stores.generations.current()  # before the inputs: no later
            self._catalog.drop()
            self._groups.drop()
            self.rollouts.forget()
            inputs = self._decision_inputs()
            affected = wanted | inputs.affects_since(self._decided)
            decided = self._decide(affected, inputs, progress)
        except BaseException:
            with self._pending_lock:
                self._pending |= wanted  # the next pass decides them
            raise
        finally:
            self._progress = None
        self._decided = inputs
        self.stores.generations.mark_decided(generation)
        return decided

    def _generation_moved_on(self) -> None:
        self.stores.generations.advance()

    def catch_up_decisions(self) -> int:
        """Decide every device again when the stored decisions are behind a change: one
        was made (the shared generation moved on) and no decision pass completed after
        it, because its process stopped first (a restart, a crash, a killed decision
        process). Without this, compliance answered from decisions made before the
        change until the next change. Called as a server starts; returns how many
        decisions were stored (0, without a pass, when none is behind). Blocking."""
        generations = self.stores.generations
        if generations.decided() >= generations.current():
            return 0
        log.warning(
            "the stored decisions are behind a change no decision pass completed after "
            "(a server stopped during one): deciding every device again"
        )
        return self.recompute_decisions(EVERYONE)

    def recompute_decisions_soon(self) -> None:
        """:meth:`recompute_changed` on a background thread, for a change made on a
        device's request path (a status report whose failure halted a rollout): the
        gates that hold devices back are read live, so only the stored decisions the
        admin sees follow a moment later, and the device is not kept waiting for a pass."""
        self._recompute_soon.request()

    def recomputing(self) -> dict[str, Any] | None:
        """The decision pass under way in this process, for the admin: ``affects``
        (which devices), ``devices`` (how many), ``devices_left``, ``started_at``
        (ISO 8601) and ``queued`` (a change waits for the next pass); only ``affects`` and
        ``queued`` (True) while a pass waits, or reads what changed and counts its devices;
        None when none runs and none waits."""
        with self._pending_lock:
            progress = self._progress
            queued = bool(self._pending) or self._again
        if progress is None:
            waiting = self._pending.describe() if self._pending else _WHAT_CHANGED
            return {"affects": waiting, "queued": True} if queued else None
        if progress.devices is None:  # reading what changed and counting its devices
            return {"affects": progress.affects, "queued": True}
        return {
            "affects": progress.affects,
            "devices": progress.devices,
            "devices_left": max(0, progress.devices - progress.decided),
            "started_at": progress.started_at.isoformat(),
            "queued": queued,
        }

    def _decision_inputs(self) -> _DecisionInputs:
        """Every input of a decision but the device's own state and the time."""
        groups = self._declarations.groups()
        policies = {g: self.group_view(g).policy for g in groups}
        return _DecisionInputs(self.catalog(), groups, policies, self.rollouts.decision_inputs())

    def _decide(self, affected: Affected, inputs: _DecisionInputs, progress: _Progress) -> int:
        if not affected:
            return 0
        devices = self._devices.count_device_states(**self._device_filters(affected))
        progress.affects, progress.devices = affected.describe(), devices

        def decided(count: int) -> None:
            progress.decided = count

        elsewhere = self.decide_elsewhere
        if elsewhere is not None and devices >= self.decide_elsewhere_from:
            written, stale = elsewhere(affected, self.clock(), decided)
        else:
            written, stale = self.decide_here(affected, decided, inputs.catalog)
        if stale:  # still reporting: their reports stored decisions; checked next pass
            with self._pending_lock:
                self._pending |= Affected(devices=stale)
        return written

    def _device_filters(self, affected: Affected) -> dict[str, Any]:
        """The store's filters for the devices ``affected`` names (none: every device)."""
        if affected.everyone:
            return {}
        return {
            "platforms": affected.reported_platforms(self._devices.reported_platforms()),
            "groups": sorted(affected.groups),
            "devices": sorted(affected.devices),
        }

    def decide_here(
        self,
        affected: Affected,
        decided: Callable[[int], None],
        catalog: Catalog | None = None,
    ) -> tuple[int, frozenset[str]]:
        """Decide again, in this thread, for the devices ``affected`` names: in batches of
        :data:`RECOMPUTE_BATCH`, each followed by a pause of :data:`RECOMPUTE_YIELD` times
        its own duration. ``decided`` is told how many devices are decided so far after
        each batch; ``catalog``: the one to decide against (None: the current one).
        Returns how many decisions were stored, and the devices that kept reporting while
        theirs was made (decided again :data:`STALE_ATTEMPTS` times; their own reports
        stored decisions, and the next pass checks them)."""
        filters = self._device_filters(affected)
        catalog = self.catalog() if catalog is None else catalog
        now = self.clock()

        def decision(row: DeviceStateRow) -> DecidedDevice:
            holds = self.rollouts.holds(row.device_id, row.group_id, row.state.platform)
            policy = self._device_policy(row.device_id, row.group_id)
            return DecidedDevice(
                row.device_id, row.version, _decision(row.state, catalog, policy, now, holds)
            )

        written, count, stale = 0, 0, set()
        batches = self._devices.device_states(RECOMPUTE_BATCH, **filters)
        for attempt in range(1 + STALE_ATTEMPTS):
            started = time.monotonic()  # a batch's time counts its read, its rules, its write
            for batch in batches:
                done = self._devices.write_decisions([decision(row) for row in batch])
                written += done.written
                stale.update(done.stale)
                count += len(batch) - len(done.stale)
                decided(count)
                time.sleep((time.monotonic() - started) * RECOMPUTE_YIELD)
                started = time.monotonic()
            if not stale or attempt == STALE_ATTEMPTS:
                break
            # reported while their decision was made: decided again from what they reported
            batches = self._devices.device_states(RECOMPUTE_BATCH, devices=sorted(stale))
            stale = set()
        return written, frozenset(stale)

    def compliance(self, counts: DecisionCounts | None = None) -> ComplianceSummary:
        """Every supplement and CVE of the catalogue with its devices per standing.

        The domain's one summary (:func:`~bsi.domain.compliance.summarize`, the
        same ``bsi apple compliance`` runs per device) over the stored decisions
        counted in groups by one SQL aggregate: no pass over the fleet. A stored
        outcome this bsi does not know counts as ``unknown`` (fail closed).
        ``counts``: the :meth:`decision_counts` the caller already read, so that both agree.
        """
        if counts is None:
            counts = self._devices.decision_counts()
        catalog = self.catalog()
        by_build = {(s.platform, str(s.build)): s for s in catalog.supplements}

        def group(key: DecisionGroup, n: int, containers: bool = False) -> FleetGroup:
            platform = key.platform or ""
            return FleetGroup(
                platform=key.platform,
                product_version=_version(key.product_version),
                installed=by_build.get((platform, key.installed_build or "")),
                outcome=_outcome(key.outcome),
                reason=key.reason,
                target=by_build.get((platform, key.supplement_build or "")),
                count=n,
                containers=containers,
            )

        groups = [group(key, n) for key, n in counts.by_group.items()]
        groups += [group(key, n, containers=True) for key, n in counts.containers.items()]
        return summarize(groups, catalog)

    def patch_windows(self) -> dict[str, tuple[Supplement, list[PatchWindow]]]:
        """Per supplement build: each device's time from posting to first running it."""
        catalog = self.catalog()
        posted = {str(s.build): s for s in catalog.supplements if s.posted is not None}
        windows: dict[str, tuple[Supplement, list[PatchWindow]]] = {
            build: (s, []) for build, s in posted.items()
        }
        for change in self._devices.build_changes(sorted(posted)):
            if change.supplemental_build is None:
                continue
            supplement = posted[change.supplemental_build]
            assert supplement.posted is not None
            windows[change.supplemental_build][1].append(
                PatchWindow(
                    change.device_id,
                    change.supplemental_build,
                    posting_instant(supplement.posted),
                    change.observed_at,
                )
            )
        return windows


def _view_key(identity: DeviceIdentity) -> tuple[int, str, tuple[str, ...]]:
    scope = USER if identity.channel else SYSTEM
    return identity.group_id, scope, identity.subscription or BSI_STATUS_ITEMS


def _check_identity(report: StatusReport, udid: str | None, serial: str | None) -> None:
    """Raise IdentityMismatch when ``report`` names other hardware than ``udid`` and
    ``serial`` (those the enrollment is bound to, when known)."""
    found = identity_contradictions(report.items, udid, serial)
    if found:
        raise IdentityMismatch("status report refused: " + "; ".join(found))


def _bound(known: Enrollment | None) -> tuple[str | None, str | None]:
    """The hardware (udid, serial number) an enrollment is bound to, if known."""
    return (known.udid, known.serial_number) if known else (None, None)


def _version(text: str | None) -> ProductVersion | None:
    try:
        return ProductVersion.parse(text) if text else None
    except InvalidVersion:
        return None


def _decision(
    state: DeviceState,
    catalog: Catalog,
    policy: SoftwareUpdatePolicy,
    now: datetime,
    holds: DeviceHolds = NO_HOLDS,
) -> Decision:
    """The device's decision, with its running containers' (a container host's): ``unknown``
    while bsi cannot place it, and then so are its containers (those of its last valid
    report); an install is held back by ``holds`` (its rollout wave, its group's
    maintenance window), a container's as its host's.

    ``status-invalid`` while its last word on an item the decision reads was
    refused (the stored value is older than what it said), ``not-reported``
    while it has not reported its OS.
    """
    invalid = invalid_decision_items(state)
    if invalid:
        refused = unknown(
            Reason.STATUS_INVALID,
            "the device's last report of " + ", ".join(invalid) + " was refused as invalid; "
            "it is unknown until it reports them validly",
        )
        return with_containers(refused, _stored_containers(state), None, catalog, policy, now)
    try:
        facts = state.facts()
    except BsiError as error:
        unplaced = unknown(Reason.NOT_REPORTED, error.message)
        return with_containers(unplaced, _stored_containers(state), None, catalog, policy, now)
    return with_containers(
        holds.apply(decide(facts, catalog, policy, now), now),
        facts.containers,
        facts,
        catalog,
        policy,
        now,
        then=lambda decision: holds.apply(decision, now),
    )


def _stored_containers(state: DeviceState) -> tuple[ContainerFacts, ...] | None:
    """The containers of the device's last valid report (none when it gave none valid)."""
    try:
        return read_container_items(state.items)
    except InvalidInput:
        return None


def _outcome(stored: str) -> Outcome:
    """The stored outcome; one this bsi does not know is ``unknown`` (fail closed)."""
    try:
        return Outcome(stored)
    except ValueError:
        return Outcome.UNKNOWN


def window_percentiles(windows: list[PatchWindow]) -> dict[str, float]:
    """p50/p90/p99 in seconds, for JSON."""
    return {f"p{p}": value.total_seconds() for p, value in percentiles(windows).items()}


def _republished(known: Supplement, new: Supplement, origin: str) -> str:
    return (
        f"{known.platform}/{known.build} was published with sha256 "
        f"{known.target_sha256}; {origin} now signs sha256 {new.target_sha256} under it"
    )
