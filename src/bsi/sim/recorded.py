"""The agent's own cycle on a light simulated device: activation recorded, not performed.

:class:`RecordedAgent` *is* :class:`bsi.agent.runner.Agent` — the same
check-in, the same decision (:func:`~bsi.agent.machine.next_steps`), the same
steps, commit and failure records, the same status reports — with the
agent's seams to the host filled in memory:

* the activator is :class:`RecordOnlyActivator`: activating a supplement
  records its build as active; no file moves;
* facts are probed once from the device root (nothing changes it during a
  run) and kept; the local state is kept in memory (the simulator writes a
  copy to ``sim-state.json``, see :mod:`bsi.sim.devices`);
* ``download`` fetches nothing and ``stage`` records the manifest of the
  catalogue's supplement (:func:`recorded_manifest`): the payload transfer
  and TUF verification are what a light device skips; full devices do them;
* relaunch finds no process to restart (none runs from a simulated root);
* the health check passes, unless the device is ``unhealthy``: then every
  supplement fails it (:data:`UNHEALTHY`), and the agent's own fallback and
  failure report follow, as on a host a bad supplement breaks.

That is what lets ten thousand devices run the agent's cycle on two cores,
and what the contract test (``tests/agent/test_agent_sim_contract.py``) holds to the
real agent: the same facts and catalogue give the same status reports.
"""

from __future__ import annotations

from pathlib import Path

from bsi.agent.activators import Outcome
from bsi.agent.config import AgentConfig
from bsi.agent.machine import Plan
from bsi.agent.runner import Agent, Clock, LocalState, utc_now
from bsi.cryptex.manifest import Action, Component, FileEntry, Manifest
from bsi.domain.catalog import Supplement
from bsi.domain.facts import DeviceFacts
from bsi.domain.policy import SoftwareUpdatePolicy
from bsi.domain.prerequisite import PackageManager
from bsi.domain.versions import Build
from bsi.errors import NotFound

RECORDED_COMPONENT = "recorded"
"""The one component of a recorded manifest: it names no real file."""
_NO_DIGEST = "0" * 64
UNHEALTHY = "the simulated device is one the supplement breaks"
"""Why an ``unhealthy`` light device's health check fails."""


def recorded_manifest(supplement: Supplement) -> Manifest:
    """A manifest with the supplement's identity (platform, versions, prerequisite,
    ``fixed_in``) and one placeholder file under the state directory, which no
    activator touches: what a light device "stages"."""
    placeholder = FileEntry(
        f"var/lib/bsi/recorded/{supplement.build}", Action.REMOVE, base_sha256=_NO_DIGEST
    )
    return Manifest(
        platform=supplement.platform,
        product_version=supplement.version.product,
        extra_version=supplement.version.extra,
        prerequisite=supplement.prerequisite,
        supplemental_build=supplement.build,
        components=(Component(RECORDED_COMPONENT, (placeholder,)),),
        fixed_in=supplement.fixed_in,
    )


class RecordOnlyActivator:
    """An :class:`~bsi.agent.activators.Activator` that records what is active, nothing more."""

    name = "recorded"
    relaunches_itself = False
    replaces_in_place = False

    def __init__(self, active: str | None = None) -> None:
        self._active = active

    def preflight(self, manifest: Manifest, staged_dir: Path) -> None:
        return None

    def activate(self, manifest: Manifest, staged_dir: Path) -> Outcome:
        build = str(manifest.supplemental_build)
        result = "already-active" if self._active == build else "activated"
        self._active = build
        return Outcome("activate", result, build, build)

    def deactivate(self, manifest: Manifest, *, force: bool = False) -> Outcome:
        build = str(manifest.supplemental_build)
        if self._active != build:
            return Outcome("deactivate", "not-active", build, self._active)
        self._active = None
        return Outcome("deactivate", "deactivated", build, None)

    def verify(self) -> tuple[str, ...]:
        return ()

    def recover(self) -> Outcome:
        return Outcome("recover", "nothing-to-do", None, self._active)

    def active(self) -> str | None:
        return self._active

    def forget(self, build: str) -> None:
        if self._active == build:
            self._active = None


class RecordedAgent(Agent):
    """:class:`~bsi.agent.runner.Agent` with its host seams in memory (see the module)."""

    def __init__(
        self,
        root: Path,
        config: AgentConfig,
        *,
        clock: Clock = utc_now,
        unhealthy: bool = False,
    ) -> None:
        self.recorder = RecordOnlyActivator()
        super().__init__(root, config, clock=clock, activator=self.recorder)
        self.unhealthy = unhealthy
        """Whether every supplement fails its health check here (a bad supplement's victim)."""
        self.state = LocalState()
        self.changed = False
        """Whether :meth:`save_state` ran since the simulator last wrote ``sim-state.json``."""
        self._probed: DeviceFacts | None = None
        self._staged: dict[str, Manifest] = {}
        self._manager: PackageManager | None = None
        self._manager_probed = False
        self._policy: tuple[str | None, SoftwareUpdatePolicy] | None = None

    def read_facts(self) -> DeviceFacts:
        """The agent's probes of the device root, run once (they cost 0.75 ms each time)."""
        if self._probed is None:
            self._probed = super().read_facts()
        return self._probed

    def _package_manager(self) -> PackageManager | None:
        """Probed once, like the facts."""
        if not self._manager_probed:
            self._manager, self._manager_probed = super()._package_manager(), True
        return self._manager

    def policy(self, state: LocalState) -> SoftwareUpdatePolicy:
        """The agent's policy, combined again only when the declarations changed."""
        if self._policy is None or self._policy[0] != state.declarations_token:
            self._policy = (state.declarations_token, super().policy(state))
        return self._policy[1]

    def load_state(self) -> LocalState:
        return self.state

    def save_state(self, state: LocalState) -> None:
        self.state = state
        self.changed = True

    def _staged_builds(self) -> list[Build]:
        return [Build.parse(build) for build in self._staged]

    def _load_staged(self, build: str) -> tuple[Manifest, Path]:
        try:
            return self._staged[build], self.layout.staged_files(build)
        except KeyError:
            raise NotFound(f"supplement {build} is not staged (recorded)") from None

    def _discard(self, build: str) -> None:
        self._staged.pop(build, None)

    def _download(self, plan: Plan, state: LocalState) -> Path:
        assert plan.target is not None
        return self.layout.state / "downloads" / str(plan.target.build)  # nothing fetched

    def _stage(self, plan: Plan, bundle: Path) -> Manifest:
        assert plan.target is not None
        manifest = recorded_manifest(plan.target)
        self._staged[str(manifest.supplemental_build)] = manifest
        return manifest

    def _check(self, manifest: Manifest) -> str | None:
        """The agent's health check, failed on an ``unhealthy`` device."""
        return UNHEALTHY if self.unhealthy else super()._check(manifest)

    def _restart_users(self, manifests: list[Manifest], state: LocalState) -> dict[int, str]:
        """No process runs from a simulated root: none is left on old content."""
        return {}
