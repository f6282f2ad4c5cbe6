"""The status writer on the real store (SQLite and PostgreSQL): one read and one write
per batch, each report with its own outcome, and an answer for every waiter."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

import bsi.server.ddm
from bsi.domain.eligibility import Decision, Outcome, Reason
from bsi.domain.status import DeviceState, merge_status, parse_status_report
from bsi.errors import BsiError, Conflict, IdentityMismatch, InvalidStatusReport, NotFound
from bsi.server.status_writer import (
    STATUS_WRITE_ATTEMPTS,
    Merged,
    StatusStored,
    StatusWriter,
    outcome,
)
from bsi.store.database import CHECKPOINT_SECONDS
from bsi.store.events import NewEvent
from bsi.store.protocols import DeviceStore
from bsi.store.store import (
    DecidedDevice,
    StatusWrite,
    Store,
    StoredDecisions,
    StoredStatus,
)
from pgcluster import free_port
from reports import macos_report, supplemental_report
from server_support import RunningServer

WAIT = 30.0
"""Seconds a test waits for an answer the writer owes (a hang fails the test)."""


class Blocked:
    """A report whose merge holds the writer thread until released, so that what is
    submitted meanwhile is taken as one batch."""

    def __init__(self, writer: StatusWriter, device_id: str) -> None:
        self.started, self.release = threading.Event(), threading.Event()

        def merge(stored: StoredStatus) -> Merged:
            self.started.set()
            assert self.release.wait(WAIT)
            return merge_status(stored.state, parse_status_report(macos_report())), None, ()

        self.done = writer.submit(device_id, merge, lambda outcome: None)
        assert self.started.wait(WAIT)


@pytest.fixture
def writer(server: RunningServer) -> StatusWriter:
    return StatusWriter(server.service.stores.devices, server.clock)


def merging(
    body: dict[str, Any], seen: list[StoredStatus] | None = None
) -> Callable[[StoredStatus], Merged]:
    """A report's merge, keeping what it was merged onto in ``seen``."""
    report = parse_status_report(body)

    def merge(stored: StoredStatus) -> Merged:
        if seen is not None:
            seen.append(stored)
        return merge_status(stored.state, report), None, ()

    return merge


def answer(done: Future[DeviceState]) -> DeviceState | BaseException:
    error = done.exception(WAIT)
    return error if error is not None else done.result()


def enrolled(server: RunningServer, count: int) -> list[str]:
    return [server.device()[0] for _ in range(count)]


def test_two_reports_of_one_device_in_a_batch_merge_in_order(
    server: RunningServer, writer: StatusWriter
) -> None:
    """The second report merges onto what the first stored (once, not again after a lost
    compare-and-set), and each sender gets the state after its own report."""
    blocker, device_id, other = enrolled(server, 3)
    held = Blocked(writer, blocker)
    first_seen: list[StoredStatus] = []
    second_seen: list[StoredStatus] = []
    first = writer.submit(device_id, merging(macos_report(), first_seen), lambda o: None)
    second = writer.submit(
        device_id, merging(supplemental_report("25D771280a"), second_seen), lambda o: None
    )
    beside = writer.submit(other, merging(macos_report()), lambda o: None)
    held.release.set()

    after_first, after_second = answer(first), answer(second)
    assert isinstance(after_first, DeviceState)
    assert isinstance(after_second, DeviceState)
    assert (str(after_first.build), after_first.supplemental_build) == ("25D2128", None)
    assert str(after_second.supplemental_build) == "25D771280a"
    assert isinstance(answer(beside), DeviceState)
    assert [s.version for s in first_seen] == [0]
    assert [(s.version, s.state) for s in second_seen] == [(1, after_first)]
    assert second_seen[0].state is after_first  # what it wrote, not read and built again
    devices = server.service.stores.devices
    assert devices.stored_status(device_id).version == 2
    assert devices.stored_status(device_id).state == after_second


def test_a_refused_report_refuses_only_itself(server: RunningServer, writer: StatusWriter) -> None:
    """In one batch: an unknown device, a merge that refuses (an identity contradiction),
    one that fails (a bug), a state the database refuses; the good report still lands,
    and every outcome reaches its report's ``finish``."""
    blocker, good, contradicted, broken, refused = enrolled(server, 5)
    held = Blocked(writer, blocker)
    finished: dict[str, StatusStored | BsiError] = {}

    def submit(device_id: str, merge: Callable[[StoredStatus], Merged]) -> Future[DeviceState]:
        return writer.submit(device_id, merge, lambda o: finished.__setitem__(device_id, o))

    def contradiction(stored: StoredStatus) -> Merged:
        raise IdentityMismatch("status report refused: another udid")

    def bug(stored: StoredStatus) -> Merged:
        raise RuntimeError("a bug in one merge")

    too_long = macos_report()
    too_long["StatusItems"]["device"]["model"]["identifier"] = "M" * 65
    answers = {
        "good": submit(good, merging(macos_report())),
        "ghost": submit("ghost", merging(macos_report())),
        "contradicted": submit(contradicted, contradiction),
        "broken": submit(broken, bug),
        "refused": submit(refused, merging(too_long)),
    }
    held.release.set()
    got = {name: answer(done) for name, done in answers.items()}
    assert isinstance(got["good"], DeviceState)
    assert isinstance(got["ghost"], NotFound)
    assert isinstance(got["contradicted"], IdentityMismatch)
    assert isinstance(got["broken"], RuntimeError)
    assert isinstance(got["refused"], InvalidStatusReport)
    devices = server.service.stores.devices
    assert devices.stored_status(good).version == 1
    for device_id in (contradicted, broken, refused):
        assert devices.stored_status(device_id).version == 0
    stored_good = finished[good]
    assert isinstance(stored_good, StatusStored)
    assert stored_good.written
    assert isinstance(finished[contradicted], IdentityMismatch)
    assert isinstance(finished[refused], InvalidStatusReport)
    assert broken not in finished  # not a refusal: the sender gets the error as it is


def test_an_identity_contradiction_in_a_batch_is_refused_whole_and_kept(
    server: RunningServer,
) -> None:
    """Through the service: the contradicting report stores nothing and is a security
    event; the report beside it in the batch lands."""
    service = server.service
    blocker, bound, beside = enrolled(server, 3)
    devices = service.stores.devices

    def naming(udid: str, build: str) -> dict[str, Any]:
        body = macos_report(build=build)
        body["StatusItems"]["device"]["identifier"] = {"udid": udid}
        return body

    identity = devices.device_identity(bound)
    other = devices.device_identity(beside)
    assert identity is not None
    assert other is not None
    service.report_status(identity, naming("UDID-OF-THIS-MAC", "25D2128"))
    before = devices.stored_status(bound)

    held = Blocked(service._writer, blocker)
    refused = service.submit_status(identity, naming("UDID-OF-ANOTHER", "25D2140"), "10.0.0.9")
    landed = service.submit_status(other, macos_report())
    held.release.set()
    assert isinstance(answer(refused), IdentityMismatch)
    assert isinstance(answer(landed), DeviceState)
    assert devices.stored_status(bound) == before
    assert devices.stored_status(beside).version == 1
    (event,) = service.security_events(10)
    assert (event.kind, event.enrollment_id, event.source) == (
        "identity-contradiction",
        bound,
        "10.0.0.9",
    )


class Died(BaseException):
    """What ends a thread (not an Exception: nothing on the way catches it)."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_thread_that_dies_answers_every_waiter_and_the_next_report_restarts_it(
    server: RunningServer, writer: StatusWriter
) -> None:
    blocker, dying, good, again = enrolled(server, 4)
    held = Blocked(writer, blocker)

    def die(stored: StoredStatus) -> Merged:
        raise Died

    waiting = [
        writer.submit(good, merging(macos_report()), lambda o: None),
        writer.submit(dying, die, lambda o: None),
        writer.submit(good, merging(supplemental_report("25D771280a")), lambda o: None),
    ]
    held.release.set()
    answers = [answer(done) for done in waiting]  # none hangs
    assert isinstance(answers[1], Died)
    assert all(isinstance(a, DeviceState | Died) for a in answers)
    later = writer.submit(again, merging(macos_report()), lambda o: None)
    assert isinstance(answer(later), DeviceState)


def test_when_the_database_is_away_every_waiter_gets_its_error(
    server: RunningServer, tmp_path: Path
) -> None:
    devices = server.service.stores.devices
    assert isinstance(devices, Store)
    url = devices.engine.url
    if url.get_backend_name() == "sqlite":
        away = url.set(database=str(tmp_path / "gone" / "bsi.db"))
    else:
        away = url.set(host="127.0.0.1", port=free_port())
    writer = StatusWriter(Store(create_engine(away)), server.clock)
    waiting = [
        writer.submit(f"device-{n}", merging(macos_report()), lambda o: None) for n in range(20)
    ]
    answers = [answer(done) for done in waiting]
    assert all(type(a).__name__ == "OperationalError" for a in answers), answers


def test_a_report_overtaken_between_read_and_write_is_merged_again(
    server: RunningServer, writer: StatusWriter
) -> None:
    """Another process (or writer) stores the device's status after the batch read it:
    the compare-and-set refuses the stale merge, which is merged again onto that."""
    (device_id,) = enrolled(server, 1)
    devices: DeviceStore = server.service.stores.devices
    seen: list[StoredStatus] = []
    partial = parse_status_report(supplemental_report("25D771280a"))

    def merge(stored: StoredStatus) -> Merged:
        seen.append(stored)
        if len(seen) == 1:  # the other process's full report lands now
            other = merge_status(stored.state, parse_status_report(macos_report()))
            done = devices.write_device_states(
                [StatusWrite(device_id, stored.version, None, other, None)],
                server.clock(),
            )
            assert done == [other]
        return merge_status(stored.state, partial), None, ()

    state = answer(writer.submit(device_id, merge, lambda o: None))
    assert isinstance(state, DeviceState)
    assert [s.version for s in seen] == [0, 1]
    assert (str(state.build), str(state.supplemental_build)) == ("25D2128", "25D771280a")
    assert devices.stored_status(device_id).version == 2


def test_a_report_overtaken_every_time_is_a_conflict_and_changes_nothing_more(
    server: RunningServer, writer: StatusWriter
) -> None:
    """Another write lands between every read and write: after STATUS_WRITE_ATTEMPTS
    merges the sender is told to send again (Conflict), and only the others' writes are
    stored."""
    (device_id,) = enrolled(server, 1)
    devices: DeviceStore = server.service.stores.devices
    seen: list[StoredStatus] = []

    def merge(stored: StoredStatus) -> Merged:
        seen.append(stored)
        other = merge_status(stored.state, parse_status_report(macos_report()))
        decision = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, f"other write {len(seen)}")
        done = devices.write_device_states(
            [StatusWrite(device_id, stored.version, stored.state, other, decision)],
            server.clock(),
        )
        assert done == [other]
        partial = parse_status_report(supplemental_report("25D771280a"))
        return merge_status(stored.state, partial), None, ()

    refused = answer(writer.submit(device_id, merge, lambda o: None))
    assert isinstance(refused, Conflict), refused
    assert "kept changing" in refused.message
    assert len(seen) == STATUS_WRITE_ATTEMPTS
    assert devices.stored_status(device_id).version == STATUS_WRITE_ATTEMPTS
    kept = devices.stored_status(device_id).state
    assert kept is not None
    assert kept.supplemental_build is None  # this report's news was never stored


def test_a_report_not_stored_in_time_answers_503_and_is_withdrawn(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``STATUS_WRITE_TIMEOUT``: the device is told to retry, and a report the writer had
    not taken yet is withdrawn (the 503 says nothing was changed)."""
    monkeypatch.setattr(bsi.server.ddm, "STATUS_WRITE_TIMEOUT", 0.5)
    device_id, device = server.device()
    (blocker,) = enrolled(server, 1)
    held = Blocked(server.service._writer, blocker)
    try:
        response = device.put("/v1/ddm/status", json=macos_report())
    finally:
        held.release.set()
    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
    assert "it was withdrawn: nothing was changed" in response.json()["message"]
    assert isinstance(answer(held.done), DeviceState)
    assert server.service.stores.devices.stored_status(device_id).version == 0
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    assert server.service.stores.devices.stored_status(device_id).version == 1


def test_a_report_taken_but_not_answered_in_time_is_not_called_unchanged(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report the writer took may land after its sender gave up: the 503 says so
    rather than that nothing changed (here the batch is stored, and the step after the
    write, the rollouts' look at its failures, is slow)."""
    monkeypatch.setattr(bsi.server.ddm, "STATUS_WRITE_TIMEOUT", 0.5)
    device_id, device = server.device()
    release = threading.Event()
    rollouts = server.service.rollouts
    react = rollouts.react

    def slow(events: Any) -> int:
        assert release.wait(WAIT)
        return react(events)

    monkeypatch.setattr(rollouts, "react", slow)
    try:
        response = device.put("/v1/ddm/status", json=macos_report())
    finally:
        release.set()
    assert response.status_code == 503, response.text
    assert "retry-after" in response.headers
    message = response.json()["message"]
    assert "the writer had taken it, so it may still be stored" in message
    assert "nothing was changed" not in message
    # Stored: by now, or (on a slow machine the write itself outlasts the wait) soon after.
    deadline = time.monotonic() + WAIT
    while server.service.stores.devices.stored_status(device_id).version != 1:
        assert time.monotonic() < deadline, "the report the writer took was never stored"
        time.sleep(0.05)


def test_a_decision_pass_racing_batches_leaves_every_decision_that_of_the_stored_state(
    server: RunningServer,
) -> None:
    """Decision passes and batches of reports on the same devices at once (on PostgreSQL
    a pass skips rows a batch holds): nothing waits forever, every report is answered,
    and deciding once more afterwards changes no device's decision."""
    service = server.service
    devices = service.stores.devices
    ids = enrolled(server, 24)
    identities = [devices.device_identity(d) for d in ids]
    for identity in identities:
        assert identity is not None
        service.report_status(identity, macos_report())

    def decided() -> dict[str, tuple[str | None, str | None]]:
        records = (devices.get_device(d)[0] for d in ids)
        return {r.device_id: (r.decision_outcome, r.decision_supplement_build) for r in records}

    stop = threading.Event()
    passes: list[int] = []

    def decide_again() -> None:
        while not stop.is_set():
            passes.append(service.recompute_decisions())

    racing = threading.Thread(target=decide_again)
    racing.start()
    try:
        for build in ("25D771280a", "25D2128"):  # installed, then rolled back
            waiting = []
            for identity in identities:
                assert identity is not None
                body = supplemental_report(build) if build != "25D2128" else macos_report()
                waiting.append(service.submit_status(identity, body))
            assert all(isinstance(answer(done), DeviceState) for done in waiting)
    finally:
        stop.set()
        racing.join(WAIT)
    assert not racing.is_alive()
    assert passes
    before = decided()
    service.recompute_decisions()
    assert decided() == before


def test_a_pass_that_read_before_a_batch_wrote_does_not_overwrite_its_decisions(
    server: RunningServer,
) -> None:
    """The pass reads the states, a batch of reports lands, the pass writes: the
    compare-and-set on the status version refuses every decision made from a replaced
    state (they come back as stale), and the batch's decisions stay."""
    service = server.service
    devices = service.stores.devices
    blocker, *ids = enrolled(server, 6)
    identities = [devices.device_identity(d) for d in ids]
    for identity in identities:
        assert identity is not None
        service.report_status(identity, macos_report())
    held = Blocked(service._writer, blocker)
    waiting = []
    for identity in identities:
        assert identity is not None
        waiting.append(service.submit_status(identity, supplemental_report("25D771280a")))
    read = [row for batch in devices.device_states(devices=ids) for row in batch]
    held.release.set()
    assert all(isinstance(answer(done), DeviceState) for done in waiting)
    from_old = Decision(Outcome.BLOCKED, Reason.NOT_REPORTED, "decided from the older state")
    stored = devices.store_decisions(DecidedDevice(r.device_id, r.version, from_old) for r in read)
    assert stored == StoredDecisions(0, sorted(ids))
    for device_id in ids:
        record = devices.get_device(device_id)[0]
        assert record.supplemental_build == "25D771280a"
        assert record.decision_outcome != Outcome.BLOCKED.value


def test_a_batch_tells_what_it_stored_once_before_answering(server: RunningServer) -> None:
    """The server halts rollouts from ``written``: called once per batch, with the
    events of the reports stored (not of a refused or unchanged one), before any of
    them is answered; an error there is logged and the reports stay stored."""
    told: list[list[str | None]] = []
    answered_before: list[bool] = []
    waiting: list[Future[DeviceState]] = []

    def written(events: list[NewEvent]) -> None:
        told.append([e.device_id for e in events])
        answered_before.append(any(done.done() for done in waiting[:2]))
        raise RuntimeError("the rollouts could not be read")

    writer = StatusWriter(server.service.stores.devices, server.clock, written=written)
    blocker, first, second, unchanged = enrolled(server, 4)
    for device_id in (blocker, unchanged):
        stored = writer.submit(device_id, merging(macos_report()), lambda o: None)
        assert isinstance(answer(stored), DeviceState)
    report = parse_status_report(macos_report())

    def with_event(device_id: str) -> Callable[[StoredStatus], Merged]:
        def merge(stored: StoredStatus) -> Merged:
            event = NewEvent("device-installed", "automatic", "test", server.clock(), device_id)
            return merge_status(stored.state, report), None, (event,)

        return merge

    told.clear()
    held = Blocked(writer, blocker)
    for device_id in (first, second, unchanged):
        waiting.append(writer.submit(device_id, with_event(device_id), lambda o: None))
    held.release.set()
    assert all(isinstance(answer(done), DeviceState) for done in waiting)
    assert [t for t in told if t] == [[first, second]]
    assert not any(answered_before)


def test_a_batch_settled_at_once_reaches_the_loop_in_one_hand_over() -> None:
    """Each waiter gets its own result or error, and the loop is woken once for the
    burst, not once per report (asyncio.wrap_future's cost, issue 18)."""

    async def scenario() -> tuple[int, list[object]]:
        loop = asyncio.get_running_loop()
        wakes = 0
        threadsafe = loop.call_soon_threadsafe

        def counted(callback: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
            nonlocal wakes
            wakes += 1
            return threadsafe(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        futures: list[Future[int]] = [Future() for _ in range(50)]
        waits = [asyncio.ensure_future(outcome(f)) for f in futures]
        await asyncio.sleep(0)  # every wait has started

        def settle() -> None:  # as the writer settles a batch: one after another
            for n, future in enumerate(futures):
                assert future.set_running_or_notify_cancel()
                if n % 7:
                    future.set_result(n)
                else:
                    future.set_exception(Conflict(f"report {n} refused"))

        settler = threading.Thread(target=settle)
        settler.start()
        settler.join()  # the loop waits here, so the whole batch is settled before it runs
        return wakes, await asyncio.gather(*waits, return_exceptions=True)

    wakes, results = asyncio.run(scenario())
    assert wakes == 1
    for n, result in enumerate(results):
        if n % 7:
            assert result == n
        else:
            assert isinstance(result, Conflict)
            assert result.message == f"report {n} refused"


def test_a_wait_given_up_withdraws_a_report_not_taken_and_ignores_a_late_answer() -> None:
    async def scenario() -> tuple[Future[int], Future[int]]:
        waiting: Future[int] = Future()
        taken: Future[int] = Future()
        assert taken.set_running_or_notify_cancel()  # the writer holds this one
        for future in (waiting, taken):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await outcome(future)
        threading.Thread(target=taken.set_result, args=(1,)).start()
        await asyncio.sleep(0.1)  # its answer arrives for a wait that is gone: no error
        return waiting, taken

    waiting, taken = asyncio.run(scenario())
    assert waiting.cancelled()  # the writer skips it: nothing is written
    assert not waiting.set_running_or_notify_cancel()
    assert taken.result() == 1


@pytest.mark.parametrize("server", ["sqlite"], indirect=True)
def test_the_server_moves_stored_reports_into_the_database_file_itself(
    server: RunningServer, tmp_path: Path
) -> None:
    """The status writer's commits leave SQLite's log alone (a checkpoint there was most of
    a batch's time at a million devices); the server's own background checkpoint puts an
    acknowledged report in the database file within a few of its intervals, with no
    later write: a copy of the file alone holds it."""
    device_id, device = server.device()
    assert device.put("/v1/ddm/status", json=macos_report()).status_code == 200
    database = server.service.stores.devices.engine.url.database  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10 * CHECKPOINT_SECONDS + 5
    while not reported_in_file_alone(Path(database), tmp_path / "copy.db", device_id):
        assert time.monotonic() < deadline, "the report never reached the database file"
        time.sleep(CHECKPOINT_SECONDS / 5)


def reported_in_file_alone(database: Path, copy: Path, device_id: str) -> bool:
    """Whether a copy of the database file, without its log, holds a report of the device."""
    shutil.copyfile(database, copy)
    with contextlib.closing(sqlite3.connect(copy)) as connection:
        row = connection.execute(
            "SELECT status_version FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
    return row is not None and row[0] > 0
