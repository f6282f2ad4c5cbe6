"""Power cuts under the real agent: its root and state on a loop-mounted ext4 image.

A device (root and ``/var/lib/bsi``) lives on an ext4 file system in an image
file (tests/loopfs.py); a service maps its libssl. While real ``bsi agent``
processes run cycles against the real server, round after round, each with a
new letter ``(x)`` (``(a)``, ``(b)``, ...) —

1. the publisher signs ``(x)`` and the server serves it;
2. ``once``: download through TUF (refresh included), stage, activate ``(x)``,
   relaunch, health check, commit;
3. ``rollback``: an administrator's removal, relaunch, report;
4. the server allows ``(x)`` again; ``once`` installs it again;
5. the server withdraws ``(x)``; ``once`` rolls it back and relaunches —

copies of the image are taken at random instants (the running agent is
stopped for the copy, so the copy is one instant of the disk). Each copy is
then mounted (ext4 replays its journal, as at the next boot) and the agent
run on it again: ``bsi agent recover``, then a cycle with no newer word from
the server (its retry cursor moved past what the server allowed after the
cut), then — removing what is installed — the publisher signs one more letter
and a cycle must download and install it. Counted over all copies, and each must
be 0:

* mixed trees: files neither exactly the baseline's nor exactly ``(a)``'s;
* unverified activations left live: ``pending_commit`` after recovery;
* undone rollbacks: a removal whose deactivation had committed, undone by
  the next cycle or not reported to the server by it;
* devices that can never install again: any error, or not ending on the
  newest letter, committed, byte for byte.

Cuts: ``BSI_AGENT_POWER_CUTS`` (default 6; 50 under ``CI=true``), spread over
``BSI_AGENT_POWER_CUT_SECONDS`` (default 15; 40 under ``CI=true``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from test_agent_end_to_end import HEALTHY, publish_letter, snapshot

from agent_support import Served, baseline_device, serving, start_holder, stop_holder, wait_for
from bsi.agent.config import AgentConfig
from bsi.agent.runner import REMOVED, Agent
from bsi.errors import BsiError
from cryptex_support import PATCHED_FILES
from loopfs import loop_filesystem, mounted, power_cut

CUTS = int(os.environ.get("BSI_AGENT_POWER_CUTS", "50" if os.environ.get("CI") else "6"))
SEED = 20261130
SPAN = float(os.environ.get("BSI_AGENT_POWER_CUT_SECONDS", "40" if os.environ.get("CI") else "15"))
"""Seconds the cuts spread over: under ``CI=true`` about three rounds of the scenario on a
busy machine, for ``make test`` about one (each of its steps)."""
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class Live:
    """The device on the image while the scenario runs, and what the cutter needs."""

    root: Path
    served: Served
    env: dict[str, str]
    device_id: str = ""
    build: str = ""  # the letter of this round
    step: str = "idle"
    running: subprocess.Popen[bytes] | None = None
    allowed: list[int] = field(default_factory=list)  # allow-retry ids, in order
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    rounds: int = 0
    error: BaseException | None = None


def _agent(live: Live, *command: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bsi", "agent", *command, "--root", str(live.root)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=live.env,
    )
    with live.lock:
        live.running = process
    _, err = process.communicate(timeout=300)
    with live.lock:
        live.running = None
    assert process.returncode == 0, (command, err.decode()[-2000:])


def _allow(served: Served, build: str, device_id: str) -> int:
    response = served.admin.post(
        f"/v1/admin/supplements/debian/{build}/allow-retry", params={"device_id": device_id}
    )
    assert response.status_code == 201, response.text
    ident: int = response.json()["id"]
    return ident


def _steer(served: Served, build: str, action: str) -> None:
    assert served.admin.post(f"/v1/admin/supplements/debian/{build}/{action}").is_success


def _publish(served: Served, work: Path, letter: str) -> str:
    """Sign ``(letter)`` (its own libssl) and have the server serve it; its build."""
    files = {**PATCHED_FILES, "usr/lib/libssl.so.3": f"libssl fixed ({letter}) ".encode() * 4000}
    publish_letter(work, letter, files, HEALTHY, served.relaunch)
    assert served.admin.post("/v1/admin/catalog/sync-repository").is_success
    return f"12A100{letter}"


def _scenario(live: Live, work: Path, letters: Iterator[str]) -> None:
    """Rounds of publish, install, rollback, re-allow and install, withdraw."""
    try:
        while not live.stop.is_set():
            for step in ("publish", "install", "rollback", "reinstall", "withdraw"):
                live.step = step
                if step == "publish":
                    live.build = _publish(live.served, work, next(letters))
                elif step == "install":
                    _agent(live, "once")
                elif step == "rollback":
                    _agent(live, "rollback")
                elif step == "reinstall":
                    with live.lock:
                        live.allowed.append(_allow(live.served, live.build, live.device_id))
                    _agent(live, "once")
                else:
                    _steer(live.served, live.build, "withdraw")
                    _agent(live, "once")
                if live.stop.is_set():
                    break
            live.rounds += 1
    except BaseException as error:  # reported by the test
        live.error = error
    finally:
        live.step = "idle"


@dataclass(frozen=True)
class Cut:
    image: Path
    step: str  # what the agent was doing


@contextlib.contextmanager
def _paused(live: Live) -> Iterator[None]:
    """The running agent stopped, so that a copy is one instant of its disk."""
    with live.lock:
        process = live.running
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)


@dataclass
class Outcome:
    step: str
    recovered: str = ""
    mixed: bool = False
    unverified: bool = False
    rollback_committed: bool = False
    undone: bool = False
    stuck: str | None = None  # why this device could not install again


def _check(cut: Cut, where: Path, served: Served, work: Path, newest: str, allowed: int) -> Outcome:
    """Recover the copy, run the next cycle, then make sure it installs ``newest``.

    ``allowed`` is the newest allow-retry id the server had made: the copy's
    next cycle is run as if the server had said nothing since the cut.
    """
    outcome = Outcome(cut.step)
    with mounted(cut.image, where) as after:
        root = after / "device" / "root"
        (root.parent / "holder.pid").unlink(missing_ok=True)  # the live service is gone
        agent = Agent(root, AgentConfig())
        try:
            removed = {
                build
                for build, failure in agent.load_state().failures.items()
                if failure.get("kind") == REMOVED
            }
            outcome.recovered = str(agent.recover()["result"])
            active = agent.activator.active()
            outcome.mixed = snapshot(root) != _tree(work, active)
            outcome.unverified = agent.load_state().pending_commit is not None
            committed = removed - {active}
            outcome.rollback_committed = bool(committed)

            # The next cycle, with no newer word from the server than at the cut.
            state = agent.load_state()
            state.retry_cursor = max(state.retry_cursor, allowed)
            agent.save_state(state)
            first = agent.once()
            active = agent.activator.active()
            outcome.mixed |= snapshot(root) != _tree(work, active)
            record = served.admin.get(f"/v1/admin/devices/{state.device_id}").json()
            outcome.undone = bool({active, record["supplemental_build"]} & committed)

            # And it can install the newest letter through TUF.
            report = first
            if f"download {newest}" not in first.steps or active != newest:
                if active is not None:
                    agent.rollback(force=True)
                _allow(served, newest, state.device_id)
                report = agent.once()
            status = agent.status()
            if report.failure or report.active != newest or snapshot(root) != _tree(work, newest):
                outcome.stuck = f"ended on {report.active}: {report.failure}"
            elif status["pending_commit"] or status["last_good"] != newest:
                outcome.stuck = f"not committed: {status}"
        except (BsiError, OSError, ValueError, KeyError) as error:
            outcome.stuck = f"{type(error).__name__}: {error}"
    return outcome


def _tree(work: Path, build: str | None) -> dict[str, tuple[str, int]]:
    """What the device's files must be with ``build`` active (the baseline for ``None``)."""
    return snapshot(work / (f"patched-{build[-1]}" if build else "base"))


def test_power_cuts_during_real_agent_cycles_leave_every_device_consistent_and_installable(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    work = tmp_path / "server"
    letters = iter(LETTERS)
    with serving(work) as served:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")
        with loop_filesystem(tmp_path / "fs", "48M") as (image, live_dir):
            root = live_dir / "device" / "root"
            baseline_device(root)
            os.sync()  # the OS's own files were on disk long before any cut
            live = Live(root, served, env)
            cuts = _cut_while_running(live, image, work, letters, tmp_path)
        newest = _publish(served, work, next(letters))
        allowed = live.allowed[-1] if live.allowed else 0
        outcomes = []
        for n, cut in enumerate(cuts):
            outcomes.append(_check(cut, tmp_path / f"after-{n}", served, work, newest, allowed))
            cut.image.unlink()
    _report(outcomes, live.rounds, time.monotonic() - started)


def _cut_while_running(
    live: Live, image: Path, work: Path, letters: Iterator[str], into: Path
) -> list[Cut]:
    """Run the scenario on the live image; copy the image at ``CUTS`` random instants."""
    agent = Agent(live.root, AgentConfig())
    live.device_id = agent.enroll(live.served.url, live.served.token, live.served.anchor)
    holder = start_holder(work / "scripts" / "holder.py", live.root)
    pidfile = live.root.parent / "holder.pid"
    scenario = threading.Thread(target=_scenario, args=(live, work, letters))
    rng = random.Random(SEED)
    spacing = max(SPAN / CUTS, 0.3)  # a few rounds of the scenario, whatever the count
    cuts: list[Cut] = []
    try:
        wait_for(lambda: pidfile.exists(), 20)
        scenario.start()
        for n in range(CUTS):
            time.sleep(rng.uniform(0, 2 * spacing))
            copy = into / f"cut-{n}.img"
            with _paused(live):
                step = live.step
                power_cut(image, copy)
            cuts.append(Cut(copy, step))
            assert live.error is None, live.error
    finally:
        live.stop.set()
        if scenario.is_alive():
            scenario.join(timeout=600)
        stop_holder(holder, pidfile)
        time.sleep(0.2)  # the service's last instance lets go of the file system
    assert live.error is None, live.error
    return cuts


def _report(outcomes: list[Outcome], rounds: int, seconds: float) -> None:
    mixed = sum(o.mixed for o in outcomes)
    unverified = sum(o.unverified for o in outcomes)
    committed = sum(o.rollback_committed for o in outcomes)
    undone = sum(o.undone for o in outcomes)
    stuck = [o for o in outcomes if o.stuck]
    print(
        f"\nagent power cuts: {len(outcomes)} cuts over {rounds} rounds of real cycles; "
        f"{mixed} mixed trees, {unverified} unverified activations left live, "
        f"{committed} with a committed rollback, {undone} undone, "
        f"{len(stuck)} devices that can never install again; {seconds:.1f} s"
    )
    table = Counter((o.step, o.recovered.split(":")[0]) for o in outcomes)
    for (step, recovered), count in sorted(table.items()):
        print(f"  cut during {step:10} recover -> {recovered:14}: {count}")
    for o in stuck:
        print(f"  stuck after a cut during {o.step}: {o.stuck}")
    assert len(outcomes) == CUTS
    assert (mixed, unverified, undone, len(stuck)) == (0, 0, 0, 0), json.dumps(
        [o.__dict__ for o in outcomes if o.mixed or o.unverified or o.undone or o.stuck],
        indent=1,
    )
    assert len({o.step for o in outcomes}) > 1 or CUTS < 6
