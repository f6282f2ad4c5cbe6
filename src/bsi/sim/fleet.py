"""The simulated fleet: which kinds of device it holds, and each device's root.

A simulated device is a small directory laid out like a real host's root:
``etc/os-release`` (platform, product version, build), ``etc/bsi/agent.yaml``
(the architecture and model, as an appliance states them, because the
simulator runs on one machine whose own CPU would otherwise be every
device's), and ``sys/class/power_supply`` (mains adapter and battery). The
agent's own fact probes read these files, so the decision a simulated device
makes comes from the same code and the same inputs as on a real host.

The mix of kinds is what the issue asks to see in one run: devices that get
the supplement (on mains, or on battery just above the threshold), devices on
battery just below it (arm64 needs 10 %, x86_64 20 %), devices on an older
minor release, devices whose policy is ``AlwaysOff``, hardware the supplement
is not built for, and devices that are offline for a while.

"Unsupported hardware" is modelled as a board with its own build of the same
release (``25D2130``): supplements published through TUF carry no list of
supported devices today, so the honest way a Linux supplement "is not for"
a device is that no supplement names that device's build. bsi's catalogue
then does not know that build of the release either, so the eligibility
engine fails closed: ``unknown`` / ``unknown-build``, counted, never up to date.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bsi.domain.eligibility import Outcome, Reason
from bsi.errors import InvalidInput

PLATFORM = "bsi-appliance"
"""The appliance image's os-release ``ID``: a Linux platform that bsi delivers to."""
PRODUCT_VERSION = "26.3.1"
PREREQUISITE_BUILD = "25D2128"
OLDER_VERSION = "26.2"
OLDER_BUILD = "25C56"
OTHER_BOARD_BUILD = "25D2130"
"""The same release built for an older board: no supplement names this build."""

GROUP = "sim"
"""Devices whose policy installs security supplements automatically (``AlwaysOn``)."""
GROUP_ALWAYS_OFF = "sim-always-off"
"""Devices whose policy sets ``InstallSecurityUpdate`` to ``AlwaysOff``."""


class Kind(StrEnum):
    """One kind of simulated device. The values are what ``--mix`` accepts."""

    ELIGIBLE_ARM64 = "eligible-arm64"
    ELIGIBLE_X86_64 = "eligible-x86_64"
    BATTERY_OK_ARM64 = "battery-ok-arm64"
    BATTERY_OK_X86_64 = "battery-ok-x86_64"
    BATTERY_LOW_ARM64 = "battery-low-arm64"
    BATTERY_LOW_X86_64 = "battery-low-x86_64"
    OLDER_MINOR = "older-minor"
    ALWAYS_OFF = "always-off"
    UNSUPPORTED = "unsupported"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class Battery:
    """A system battery; ``plugged`` means a mains adapter is online."""

    percent: int
    plugged: bool


@dataclass(frozen=True, slots=True)
class Profile:
    """What a device of one kind looks like, and what the rules should decide for it."""

    kind: Kind
    summary: str
    group: str
    version: str
    build: str
    architecture: str
    model: str
    battery: Battery | None
    expected_outcome: Outcome
    expected_reason: Reason
    offline: bool = False

    @property
    def expects_install(self) -> bool:
        return self.expected_outcome in (Outcome.INSTALL, Outcome.ENFORCED)

    def power(self) -> str:
        if self.battery is None:
            return "mains"
        state = "plugged in" if self.battery.plugged else "on battery"
        return f"{state} {self.battery.percent} %"


_A1 = "BSI Appliance A1"
_X1 = "BSI Appliance X1"

PROFILES: Mapping[Kind, Profile] = {
    p.kind: p
    for p in (
        Profile(
            Kind.ELIGIBLE_ARM64,
            "arm64 on mains",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "arm64",
            _A1,
            None,
            Outcome.INSTALL,
            Reason.AUTOMATIC,
        ),
        Profile(
            Kind.ELIGIBLE_X86_64,
            "x86_64 plugged in",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "x86_64",
            _X1,
            Battery(80, plugged=True),
            Outcome.INSTALL,
            Reason.AUTOMATIC,
        ),
        Profile(
            Kind.BATTERY_OK_ARM64,
            "arm64 on battery at 11 % (needs 10 %)",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "arm64",
            _A1,
            Battery(11, plugged=False),
            Outcome.INSTALL,
            Reason.AUTOMATIC,
        ),
        Profile(
            Kind.BATTERY_OK_X86_64,
            "x86_64 on battery at 21 % (needs 20 %)",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "x86_64",
            _X1,
            Battery(21, plugged=False),
            Outcome.INSTALL,
            Reason.AUTOMATIC,
        ),
        Profile(
            Kind.BATTERY_LOW_ARM64,
            "arm64 on battery at 9 % (needs 10 %)",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "arm64",
            _A1,
            Battery(9, plugged=False),
            Outcome.DEFERRED,
            Reason.BATTERY_LOW,
        ),
        Profile(
            Kind.BATTERY_LOW_X86_64,
            "x86_64 on battery at 19 % (needs 20 %)",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "x86_64",
            _X1,
            Battery(19, plugged=False),
            Outcome.DEFERRED,
            Reason.BATTERY_LOW,
        ),
        Profile(
            Kind.OLDER_MINOR,
            f"still on {OLDER_VERSION} ({OLDER_BUILD})",
            GROUP,
            OLDER_VERSION,
            OLDER_BUILD,
            "arm64",
            _A1,
            None,
            Outcome.BLOCKED,
            Reason.NOT_LATEST_MINOR,
        ),
        Profile(
            Kind.ALWAYS_OFF,
            "policy InstallSecurityUpdate=AlwaysOff",
            GROUP_ALWAYS_OFF,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "x86_64",
            _X1,
            None,
            Outcome.BLOCKED,
            Reason.POLICY_ALWAYS_OFF,
        ),
        Profile(
            Kind.UNSUPPORTED,
            f"older board, own build {OTHER_BOARD_BUILD}: no supplement, build unknown to bsi",
            GROUP,
            PRODUCT_VERSION,
            OTHER_BOARD_BUILD,
            "arm64",
            "BSI Appliance A0",
            None,
            Outcome.UNKNOWN,
            Reason.UNKNOWN_BUILD,
        ),
        Profile(
            Kind.OFFLINE,
            "arm64 on mains, offline for a while",
            GROUP,
            PRODUCT_VERSION,
            PREREQUISITE_BUILD,
            "arm64",
            _A1,
            None,
            Outcome.INSTALL,
            Reason.AUTOMATIC,
            offline=True,
        ),
    )
}

DEFAULT_MIX: Mapping[Kind, float] = {
    Kind.ELIGIBLE_ARM64: 30,
    Kind.ELIGIBLE_X86_64: 25,
    Kind.BATTERY_OK_ARM64: 5,
    Kind.BATTERY_OK_X86_64: 5,
    Kind.BATTERY_LOW_ARM64: 5,
    Kind.BATTERY_LOW_X86_64: 5,
    Kind.OLDER_MINOR: 8,
    Kind.ALWAYS_OFF: 7,
    Kind.UNSUPPORTED: 5,
    Kind.OFFLINE: 5,
}
"""Weights, not percentages: they are normalised, so any scale works."""


def format_mix(mix: Mapping[Kind, float]) -> str:
    return ",".join(f"{kind.value}={weight:g}" for kind, weight in mix.items())


def parse_mix(text: str) -> dict[Kind, float]:
    """``kind=weight,...`` laid over the default mix; ``kind=0`` leaves a kind out."""
    mix = dict(DEFAULT_MIX)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            kind = Kind(name.strip())
        except ValueError:
            raise InvalidInput(
                f"--mix: unknown device kind {name.strip()!r}",
                hint="kinds: " + ", ".join(k.value for k in Kind),
            ) from None
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        if not sep or not math.isfinite(weight) or weight < 0:
            raise InvalidInput(
                f"--mix: {part!r} is not kind=weight with a weight of 0 or more",
                hint="e.g. --mix offline=0,battery-low-arm64=10",
            )
        mix[kind] = weight
    if sum(mix.values()) <= 0:
        raise InvalidInput("--mix: every weight is 0; at least one kind needs devices")
    return mix


def allocate(count: int, mix: Mapping[Kind, float]) -> list[Kind]:
    """``count`` device kinds in proportion to ``mix``, interleaved.

    A fleet at least as large as the number of kinds in the mix gets one of
    each first, so that a 12-device demo still shows every case; the rest
    goes by largest remainder. The kinds are then interleaved (every kind's
    devices spread evenly over the list), so that the order in which devices
    start or are served favours none of them.
    """
    kinds = [k for k, w in mix.items() if w > 0]
    if count <= 0 or not kinds:
        return []
    total = sum(mix[k] for k in kinds)
    counts = dict.fromkeys(kinds, 0)
    left = count
    if count >= len(kinds):
        counts = dict.fromkeys(kinds, 1)
        left -= len(kinds)
    shares = {k: left * mix[k] / total for k in kinds}
    for k in kinds:
        counts[k] += math.floor(shares[k])
    remainder = count - sum(counts.values())
    for k in sorted(kinds, key=lambda k: (-(shares[k] - math.floor(shares[k])), kinds.index(k)))[
        :remainder
    ]:
        counts[k] += 1
    # Interleave: each device sits at its kind's evenly spaced positions.
    placed = [((i + 0.5) / counts[k], kinds.index(k), k) for k in kinds for i in range(counts[k])]
    return [k for _, _, k in sorted(placed)]


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device: its name, kind, how it is simulated, and its root."""

    index: int
    name: str
    profile: Profile
    full: bool
    root: Path

    @property
    def mode(self) -> str:
        return "full" if self.full else "light"


def plan_fleet(
    count: int,
    mix: Mapping[Kind, float],
    devices_dir: Path,
    *,
    full: int = 0,
) -> list[DeviceSpec]:
    """The fleet's devices; ``full`` of them (one per kind first) run the real agent."""
    kinds = allocate(count, mix)
    # One device of each kind first, then the second of each kind, and so on.
    rank: dict[Kind, int] = {}
    order = []
    for index, kind in enumerate(kinds):
        rank[kind] = rank.get(kind, 0) + 1
        order.append((rank[kind], index))
    chosen = {index for _, index in sorted(order)[: max(full, 0)]}
    width = max(4, len(str(count)))
    specs = []
    for index, kind in enumerate(kinds):
        name = f"dev-{index + 1:0{width}d}"
        specs.append(DeviceSpec(index, name, PROFILES[kind], index in chosen, devices_dir / name))
    return specs


# -- device roots ----------------------------------------------------------------


def os_release(profile: Profile) -> str:
    return (
        f"ID={PLATFORM}\n"
        f'NAME="BSI Appliance"\n'
        f'VERSION_ID="{profile.version}"\n'
        f"BUILD_ID={profile.build}\n"
        f'PRETTY_NAME="BSI Appliance {profile.version} ({profile.build})"\n'
    )


def agent_yaml(profile: Profile) -> str:
    """The facts an appliance states rather than probes: its CPU and its model."""
    return f"facts:\n  architecture: {profile.architecture}\n  model: {profile.model}\n"


def power_supplies(battery: Battery | None) -> dict[str, dict[str, str]]:
    """``/sys/class/power_supply`` entries as the kernel shows them."""
    if battery is None:
        return {}
    return {
        "AC": {"type": "Mains", "online": "1" if battery.plugged else "0"},
        "BAT0": {
            "type": "Battery",
            "present": "1",
            "capacity": str(battery.percent),
            "status": "Charging" if battery.plugged else "Discharging",
            "scope": "System",
        },
    }


def write_device_root(
    root: Path, profile: Profile, files: Mapping[str, bytes] | None = None
) -> None:
    """Lay out a device root: os-release, agent.yaml, power supplies and ``files``."""
    _write(root / "etc/os-release", os_release(profile).encode())
    _write(root / "etc/bsi/agent.yaml", agent_yaml(profile).encode())
    for supply, attributes in power_supplies(profile.battery).items():
        for name, value in attributes.items():
            _write(root / "sys/class/power_supply" / supply / name, f"{value}\n".encode())
    for path, data in (files or {}).items():
        _write(root / path, data)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, 0o644)


def expected_installers(specs: Sequence[DeviceSpec]) -> list[DeviceSpec]:
    return [s for s in specs if s.profile.expects_install]
