"""What a Linux device is, as eligibility needs it: :class:`~bsi.domain.facts.DeviceFacts`.

The agent reports the same facts an Apple device sends in its DDM status, so
the server decides for both with one engine. On Linux they come from:

- **os-release** (``/etc/os-release``, else ``/usr/lib/os-release``): the
  platform is ``ID``, the product version ``VERSION_ID``, the build
  ``BUILD_ID`` or ``IMAGE_VERSION`` when it is a build such as ``12A100``.
  Appliance images set these to their own release; general-purpose
  distributions have no build id at all, and are placed by their installed
  package versions instead (:mod:`bsi.agent.packages`); ``agent.yaml`` can
  state a build for an appliance whose os-release does not.
- **the kernel**: the CPU architecture, normalised to the spelling the
  battery thresholds use (``arm64``, ``x86_64``).
- **power supplies** (``/sys/class/power_supply``): on battery, and how full.
  A supplement waits for power on a low battery, as on a Mac.
- **firmware**: the model, from DMI or the device tree, when there is one.

Every fact can be overridden by :class:`~bsi.agent.config.FactsOverrides`,
for appliances whose sensors or release files say the wrong thing.

Everything is read below a ``root`` so that the agent can run against a
mounted image or a test tree (``--root``). Symbolic links met on the way are
resolved *inside* that root, as a chroot would: ``/etc/os-release`` is often a
link to ``/usr/lib/os-release``, and following it on the host would report
the host's release instead of the image's. The probes are thin; the rules
that turn what they read into facts are pure functions.
"""

from __future__ import annotations

import errno
import os
import platform as _platform
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs in dev deps

from bsi.agent.config import AgentConfig, FactsOverrides, config_path, normalise_architecture
from bsi.domain.facts import DeviceFacts
from bsi.domain.versions import Build, ProductVersion
from bsi.errors import InvalidInput, InvalidVersion

OS_RELEASE_PATHS = (PurePosixPath("/etc/os-release"), PurePosixPath("/usr/lib/os-release"))
POWER_SUPPLY_DIR = PurePosixPath("/sys/class/power_supply")
MODEL_PATHS = (
    PurePosixPath("/sys/class/dmi/id/product_name"),
    PurePosixPath("/proc/device-tree/model"),
    PurePosixPath("/sys/firmware/devicetree/base/model"),
)
BUILD_KEYS = ("BUILD_ID", "IMAGE_VERSION")

_MAX_LINKS = 40
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Values firmware vendors leave in DMI when nobody filled it in; reporting them
# as a model would make unrelated machines look alike.
_PLACEHOLDER_MODELS = frozenset(
    {
        "",
        "default string",
        "none",
        "not applicable",
        "not specified",
        "o.e.m.",
        "oem",
        "system product name",
        "to be filled by o.e.m.",
        "unknown",
    }
)


class FactsUnavailable(InvalidInput):
    """A fact eligibility needs could not be read, and no override supplies it."""


# -- os-release ------------------------------------------------------------


def parse_os_release(text: str) -> dict[str, str]:
    """The variables of an os-release file, values unquoted and unescaped.

    os-release(5) is a shell-compatible list of ``KEY=VALUE`` lines: values
    with special characters are in single quotes (taken literally) or double
    quotes (where ``\\``, ``"``, ``$`` and a backtick are escaped with a
    backslash); unquoted values may escape any character. Blank lines and
    ``#`` comments are skipped. A line that is not an assignment, or whose
    quote is never closed, is skipped as systemd does, so one bad line does
    not hide the ``ID`` next to it. A later assignment wins, as in a shell.
    """
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _KEY.fullmatch(key):
            continue
        parsed = _unquote(value.lstrip())
        if parsed is not None:
            result[key] = parsed
    return result


def _unquote(value: str) -> str | None:
    """A shell word without its quotes and escapes, or ``None`` when a quote is left open."""
    out: list[str] = []
    index, length = 0, len(value)
    while index < length:
        char = value[index]
        if char == "'":
            end = value.find("'", index + 1)
            if end < 0:
                return None
            out.append(value[index + 1 : end])
            index = end + 1
        elif char == '"':
            index += 1
            while True:
                if index >= length:
                    return None
                char = value[index]
                if char == '"':
                    index += 1
                    break
                if char == "\\" and index + 1 < length and value[index + 1] in '"\\$`':
                    out.append(value[index + 1])
                    index += 2
                    continue
                out.append(char)
                index += 1
        elif char == "\\":
            if index + 1 < length:
                out.append(value[index + 1])
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def parse_product_version(text: str) -> ProductVersion:
    """``VERSION_ID`` as a product version: ``12``, ``3.19.1``, and ``22.04`` as ``22.4``.

    Ubuntu-style zero-padded months compare correctly once the padding is
    dropped (``22.04`` < ``22.10``), so they are read as numbers rather than
    refused; anything else that is not one to three numbers is refused.
    """
    parts = text.strip().split(".")
    if 1 <= len(parts) <= 3 and all(part.isascii() and part.isdigit() for part in parts):
        return ProductVersion.parse(".".join(str(int(part)) for part in parts))
    return ProductVersion.parse(text)


@dataclass(frozen=True, slots=True)
class OsRelease:
    """The os-release variables and the file they came from, for error messages."""

    path: str
    values: Mapping[str, str]


def _os_release_facts(
    release: OsRelease | None, overrides: FactsOverrides, *, searched: str, config_file: str
) -> tuple[str, ProductVersion, Build | None]:
    """Platform, product version and build: the overrides first, then os-release.

    Each refusal says what was found where, and which key of ``config_file``
    would settle it, because the usual fix is one line there.
    """
    values = release.values if release else {}
    nothing = f"there is no os-release file ({searched})"

    def missing(what: str, problem: str, setting: str) -> FactsUnavailable:
        return FactsUnavailable(
            f"cannot tell this device's {what}: {problem}",
            hint=f"set 'facts: {{{setting}}}' in {config_file}",
        )

    if overrides.platform is not None:
        platform = overrides.platform
    elif release is not None:
        # os-release(5): "If not set, a default of ID=linux may be used."
        platform = values.get("ID") or "linux"
    else:
        raise missing("platform", nothing, "platform: debian")

    if overrides.product_version is not None:
        product_version = overrides.product_version
    else:
        version_id = values.get("VERSION_ID")
        if release is None:
            raise missing("product version", nothing, "product_version: '12.1'")
        if not version_id:
            raise missing(
                "product version", f"{release.path} has no VERSION_ID", "product_version: '12.1'"
            )
        try:
            product_version = parse_product_version(version_id)
        except InvalidVersion:
            raise missing(
                "product version",
                f"VERSION_ID={version_id!r} in {release.path} is not a dotted version "
                "such as '12.1'",
                "product_version: '12.1'",
            ) from None

    build: Build | None = overrides.build
    if build is None:
        # A stock distribution has no build id (Arch writes BUILD_ID=rolling):
        # such a host is placed by its installed packages instead.
        for key in BUILD_KEYS:
            try:
                build = Build.parse(values.get(key) or "")
                break
            except InvalidVersion:
                continue
    return platform, product_version, build


# -- power -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PowerSupply:
    """One entry of ``/sys/class/power_supply``, as far as it could be read.

    ``scope`` is ``Device`` for the batteries of peripherals (a wireless
    mouse), which say nothing about the host's power.
    """

    name: str
    type: str
    online: bool | None = None
    capacity: float | None = None
    status: str | None = None
    scope: str | None = None
    present: bool | None = None


_MAINS_TYPES = frozenset({"Mains", "USB", "Wireless"})


def battery_state(supplies: Iterable[PowerSupply]) -> tuple[bool | None, float | None]:
    """``(on_battery, percent)`` from the power supplies, as DeviceFacts wants them.

    No system battery means mains power: ``(False, None)``. With a battery,
    an online mains adapter (or USB / wireless charger) means not on battery;
    adapters that are all offline mean on battery; without any adapter the
    battery's own status decides (``Discharging`` is on battery). The
    percentage is the mean capacity of the system batteries.
    """
    batteries: list[PowerSupply] = []
    adapters: list[PowerSupply] = []
    for supply in supplies:
        if supply.scope == "Device":
            continue
        if supply.type == "Battery" and supply.present is not False:
            batteries.append(supply)
        elif supply.type in _MAINS_TYPES and supply.online is not None:
            adapters.append(supply)
    if not batteries:
        return False, None
    capacities = [b.capacity for b in batteries if b.capacity is not None]
    percent = sum(capacities) / len(capacities) if capacities else None
    on_battery: bool | None
    if any(adapter.online for adapter in adapters):
        on_battery = False
    elif adapters:
        on_battery = True
    else:
        statuses = {b.status for b in batteries if b.status}
        if "Discharging" in statuses:
            on_battery = True
        elif statuses & {"Charging", "Full", "Not charging"}:
            on_battery = False
        else:
            on_battery = None
    return on_battery, percent


def read_power_supplies(root: Path) -> list[PowerSupply]:
    """The entries of ``<root>/sys/class/power_supply``; unreadable attributes are ``None``."""
    directory = resolve_in_root(root, POWER_SUPPLY_DIR)
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError:
        return []
    supplies = []
    for name in names:
        entry = resolve_in_root(root, POWER_SUPPLY_DIR / name)

        def attribute(key: str, entry: Path = entry) -> str | None:
            return _read_small(entry / key)

        kind = attribute("type")
        if kind is None:
            continue
        supplies.append(
            PowerSupply(
                name=name,
                type=kind,
                online=_flag(attribute("online")),
                capacity=_number(attribute("capacity")),
                status=attribute("status"),
                scope=attribute("scope"),
                present=_flag(attribute("present")),
            )
        )
    return supplies


def _host_battery() -> tuple[bool | None, float | None]:
    """The running host's battery, through psutil (which knows each kernel's quirks)."""
    sensors = getattr(psutil, "sensors_battery", None)
    if sensors is None:
        return None, None
    try:
        battery = sensors()
    except (OSError, RuntimeError):
        return None, None
    if battery is None:
        return False, None
    plugged = battery.power_plugged
    return (None if plugged is None else not plugged), float(battery.percent)


def _flag(text: str | None) -> bool | None:
    if text in ("0", "1"):
        return text == "1"
    return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


# -- model -----------------------------------------------------------------


def clean_model(text: str) -> str | None:
    """A firmware model string without padding and NULs, or ``None`` for a placeholder."""
    model = text.replace("\x00", "").strip()
    return None if model.lower() in _PLACEHOLDER_MODELS else model


def read_model(root: Path) -> str | None:
    for path in MODEL_PATHS:
        text = _read_small(resolve_in_root(root, path))
        if text is not None and (model := clean_model(text)) is not None:
            return model
    return None


# -- files below a root ----------------------------------------------------


def resolve_in_root(root: Path, path: PurePosixPath) -> Path:
    """``path`` below ``root``, following symbolic links as if ``root`` were ``/``.

    An absolute link target starts again at ``root`` and ``..`` stops at it,
    so nothing read for a ``--root`` comes from the host. A missing component
    ends the walk (the caller's open then fails as usual); a loop raises
    ``ELOOP`` like the kernel.
    """
    pending = list(path.parts[1:] if path.is_absolute() else path.parts)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", str(candidate))
        link = PurePosixPath(target)
        if link.is_absolute():
            resolved = []
            pending = list(link.parts[1:]) + pending
        else:
            pending = list(link.parts) + pending
    return root.joinpath(*resolved)


def _read_small(path: Path, limit: int = 4096) -> str | None:
    """A short text file (sysfs attribute, firmware string), or ``None`` if unreadable."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit)
    except OSError:
        return None
    return data.decode("utf-8", errors="replace").strip()


def read_os_release(root: Path) -> OsRelease | None:
    """The first os-release file found below ``root``, parsed, or ``None``."""
    for candidate in OS_RELEASE_PATHS:
        try:
            path = resolve_in_root(root, candidate)
            text = path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            raise FactsUnavailable(
                f"cannot read {_under(root, candidate)}: {error.strerror}"
            ) from None
        return OsRelease(str(_under(root, candidate)), parse_os_release(text))
    return None


def _under(root: Path, path: PurePosixPath) -> Path:
    """``path`` as written below ``root``, links not followed: for messages."""
    return root / path.relative_to("/")


def _is_host_root(root: Path) -> bool:
    try:
        return root.resolve() == Path("/").resolve()
    except OSError:
        return False


# -- all together ----------------------------------------------------------


def facts_from(
    release: OsRelease | None,
    overrides: FactsOverrides,
    *,
    machine: str,
    battery: tuple[bool | None, float | None],
    model: str | None,
    utc_offset_minutes: int = 0,
    searched: str = "/etc/os-release, /usr/lib/os-release",
    config_file: str = "/etc/bsi/agent.yaml",
) -> DeviceFacts:
    """The facts from what the probes found, overrides winning. No I/O.

    The battery overrides are independent: an appliance may state that it
    never runs on battery and still report the charge its sensor reads.
    """
    platform, product_version, build = _os_release_facts(
        release, overrides, searched=searched, config_file=config_file
    )
    on_battery, percent = battery
    return DeviceFacts(
        platform=platform,
        product_version=product_version,
        build=build,
        model_identifier=overrides.model if overrides.model is not None else model,
        software_update_device_id=overrides.device_id,
        architecture=overrides.architecture or (normalise_architecture(machine) or None),
        on_battery=overrides.on_battery if overrides.on_battery is not None else on_battery,
        battery_percent=(
            overrides.battery_percent if overrides.battery_percent is not None else percent
        ),
        utc_offset_minutes=utc_offset_minutes,
    )


def read_facts(root: Path, config: AgentConfig | None) -> DeviceFacts:
    """This device's facts, read below ``root`` (``Path("/")`` on a live host).

    The battery comes from psutil on the live host and from
    ``<root>/sys/class/power_supply`` otherwise. Probes whose overrides are
    set are not run, so an appliance without os-release works once its
    config states platform, product version and build. The supplemental
    build and extra version are the agent's own state, not probed here.
    """
    overrides = config.facts if config is not None else FactsOverrides()
    config_file = str(config_path(root))
    needs_release = None in (overrides.platform, overrides.product_version, overrides.build)
    release = read_os_release(root) if needs_release else None
    if overrides.on_battery is not None and overrides.battery_percent is not None:
        battery: tuple[bool | None, float | None] = (None, None)
    elif _is_host_root(root):
        battery = _host_battery()
    else:
        battery = battery_state(read_power_supplies(root))
    return facts_from(
        release,
        overrides,
        machine=_platform.machine(),
        battery=battery,
        model=None if overrides.model is not None else read_model(root),
        utc_offset_minutes=time.localtime().tm_gmtoff // 60,
        searched=", ".join(str(_under(root, path)) for path in OS_RELEASE_PATHS),
        config_file=config_file,
    )
