"""The agent's own configuration: ``/etc/bsi/agent.yaml`` under the device root.

Most devices need no file at all: the agent finds the server through
enrollment and reads every fact it reports from the running system. The file
exists for appliances and unusual hosts, where an administrator knows better
than os-release — an image whose ``VERSION_ID`` is not a product version, a
distribution without a build id, a board whose battery sensor lies — so it can
override *every* fact the agent would otherwise probe, and tune the battery
thresholds eligibility applies.

::

    server_url: https://bsi.example.net/
    state_dir: /var/lib/bsi
    activator: swap        # or overlay (root only), or container (see bsi.agent.activators)
    container_engine: unix:///var/run/docker.sock   # with activator: container
    container_health_timeout: 60   # s a recreated container has to run and pass its checks
    container_stop_timeout: 10     # s the engine gives a container to stop before killing it
    facts:
      platform: acme-router
      product_version: "4.2"
      build: 4B120
      model: ACME R9000
      device_id: R9000-A1
      architecture: arm64
      on_battery: false
      battery_percent: 100
    thresholds:
      battery_minimum_percent: {arm64: 10, x86_64: 20}

The file is read strictly, like a cryptex spec: an unknown key or a value of
the wrong type is refused with its place in the file, because a typo such as
``buidl:`` silently ignored would leave the device reporting a fact the
administrator meant to replace. Nothing here probes the system.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import TypeVar
from urllib.parse import urlsplit

from bsi.domain.eligibility import Rules
from bsi.domain.versions import Build, ProductVersion
from bsi.errors import InvalidInput, InvalidVersion
from bsi.strict import read_yaml

CONFIG_PATH = PurePosixPath("etc/bsi/agent.yaml")
"""Where the configuration lives, relative to the device root."""

DEFAULT_STATE_DIR = PurePosixPath("/var/lib/bsi")

T = TypeVar("T")

_ARCHITECTURES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "aarch64_be": "arm64",
}


def normalise_architecture(machine: str) -> str:
    """One spelling per CPU family, the one eligibility's battery table uses.

    The kernel says ``aarch64`` where Apple and most catalogues say ``arm64``,
    and package managers say ``amd64`` for ``x86_64``; a threshold keyed by one
    spelling must apply to a device reporting the other. Unknown machines are
    kept as the kernel names them, lower-cased.
    """
    key = machine.strip().lower()
    return _ARCHITECTURES.get(key, key)


ACTIVATORS = ("swap", "overlay", "container")
"""The activators ``agent.yaml`` can choose (``activator:``); see :mod:`bsi.agent.activators`."""
DEFAULT_ACTIVATOR = "swap"
DEFAULT_CONTAINER_ENGINE = "unix:///var/run/docker.sock"
"""Docker's socket; Podman's Docker-compatible service listens on ``unix:///run/podman/podman.sock``."""
CONTAINER_HEALTH_TIMEOUT = 60.0
"""Seconds a recreated container has, by default, to run and pass its checks."""
CONTAINER_STOP_TIMEOUT = 10
"""Seconds the engine gives a container, by default, to stop after ``SIGTERM`` before it
kills it: Docker's own default."""
MAX_CONTAINER_SECONDS = 3600
"""The longest container health or stop timeout ``agent.yaml`` may set: an hour."""
_ENGINE_SCHEMES = ("unix", "tcp", "http", "https", "ssh")


class AgentConfigError(InvalidInput):
    """``agent.yaml`` cannot be read or breaks a rule; the agent does not start on it."""


@dataclass(frozen=True, slots=True)
class FactsOverrides:
    """Facts the administrator states instead of letting the agent probe them.

    ``None`` means "probe it". ``device_id`` becomes the DDM
    ``softwareupdate.device-id`` that supplements list in their supported
    devices.
    """

    platform: str | None = None
    product_version: ProductVersion | None = None
    build: Build | None = None
    model: str | None = None
    device_id: str | None = None
    architecture: str | None = None
    on_battery: bool | None = None
    battery_percent: float | None = None


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The whole configuration, with defaults for everything left out.

    ``state_dir`` is the path *as the device sees it* (absolute); use
    :meth:`state_dir_under` to find it below a ``--root``. ``source`` names the
    file it came from, for messages that tell the administrator what to edit.
    """

    server_url: str | None = None
    state_dir: PurePosixPath = DEFAULT_STATE_DIR
    activator: str = DEFAULT_ACTIVATOR
    container_engine: str = DEFAULT_CONTAINER_ENGINE
    """The Docker Engine API the ``container`` activator speaks to (Docker SDK ``base_url``)."""
    container_health_timeout: float = CONTAINER_HEALTH_TIMEOUT
    """Seconds the ``container`` activator waits for each recreated container to run and
    pass its checks before it puts the container back."""
    container_stop_timeout: int = CONTAINER_STOP_TIMEOUT
    """Seconds the engine gives a container's process to stop after ``SIGTERM`` before it
    kills it (Docker's ``stop --time``)."""
    facts: FactsOverrides = FactsOverrides()
    battery_minimum_percent: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({})
    )
    source: str | None = None

    def state_dir_under(self, root: Path) -> Path:
        """The state directory below ``root``: ``/tmp/r`` + ``/var/lib/bsi``."""
        return root / self.state_dir.relative_to("/")

    def rules(self, base: Rules, platform: str) -> Rules:
        """``base`` with this device's battery thresholds, when the file sets any.

        The agent decides for one device only, on its own ``platform``: the
        file's table is laid over the row eligibility would use for it (the
        platform's own, else the ``"*"`` default), so architectures the file
        does not name keep their usual threshold.
        """
        if not self.battery_minimum_percent:
            return base
        table = dict(base.battery_minimum_percent)
        row = dict(table.get(platform, table.get("*", {})))
        row.update(self.battery_minimum_percent)
        table[platform] = row
        return replace(base, battery_minimum_percent=table)


def config_path(root: Path) -> Path:
    return root / CONFIG_PATH


def load_config(root: Path, path: Path | None = None) -> AgentConfig:
    """The configuration at ``path`` (default ``<root>/etc/bsi/agent.yaml``).

    A missing file is the normal case and gives the defaults; a file that
    exists but cannot be read or parsed is an error, never silently ignored.
    """
    path = path if path is not None else config_path(root)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AgentConfig()
    except (OSError, UnicodeDecodeError) as error:
        raise AgentConfigError(f"{path}: cannot read the agent configuration: {error}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "agent.yaml") -> AgentConfig:
    """The configuration in ``text``; every refusal names ``source`` and the key."""
    document = read_yaml(text, source=source, error=AgentConfigError)
    reader = _Reader(source)
    top = reader.section(
        document,
        "",
        (
            "server_url",
            "state_dir",
            "activator",
            "container_engine",
            "container_health_timeout",
            "container_stop_timeout",
            "facts",
            "thresholds",
        ),
        what="top level",
    )
    facts = reader.section(
        top.values.get("facts"),
        "facts",
        (
            "platform",
            "product_version",
            "build",
            "model",
            "device_id",
            "architecture",
            "on_battery",
            "battery_percent",
        ),
    )
    thresholds = reader.section(
        top.values.get("thresholds"), "thresholds", ("battery_minimum_percent",)
    )
    minimum = thresholds.get("battery_minimum_percent", reader.thresholds)
    stop = top.get("container_stop_timeout", reader.stop_seconds)
    return AgentConfig(
        server_url=top.get("server_url", reader.url),
        state_dir=top.get("state_dir", reader.absolute_path) or DEFAULT_STATE_DIR,
        activator=top.get("activator", reader.activator) or DEFAULT_ACTIVATOR,
        container_engine=top.get("container_engine", reader.engine_url) or DEFAULT_CONTAINER_ENGINE,
        container_health_timeout=top.get("container_health_timeout", reader.health_seconds)
        or CONTAINER_HEALTH_TIMEOUT,
        container_stop_timeout=CONTAINER_STOP_TIMEOUT if stop is None else stop,  # 0 is valid
        facts=FactsOverrides(
            platform=facts.get("platform", reader.platform),
            product_version=facts.get("product_version", reader.product_version),
            build=facts.get("build", reader.build),
            model=facts.get("model", reader.text),
            device_id=facts.get("device_id", reader.text),
            architecture=facts.get("architecture", reader.architecture),
            on_battery=facts.get("on_battery", reader.boolean),
            battery_percent=facts.get("battery_percent", reader.percent),
        ),
        battery_minimum_percent=MappingProxyType(minimum or {}),
        source=source,
    )


@dataclass(frozen=True, slots=True)
class _Section:
    """One mapping of the file, with the dotted key path that leads to it."""

    prefix: str
    values: Mapping[str, object]

    def get(self, key: str, read: Callable[[object, str], T]) -> T | None:
        """``read(value)`` for a key that is present and not null, else ``None``."""
        value = self.values.get(key)
        if value is None:
            return None
        return read(value, f"{self.prefix}{key}")


class _Reader:
    """Type checks that quote the offending value and name its key in the file."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, where: str, message: str, hint: str | None = None) -> AgentConfigError:
        return AgentConfigError(f"{self.source}: {where}: {message}", hint=hint)

    def section(
        self, value: object, where: str, allowed: tuple[str, ...], *, what: str | None = None
    ) -> _Section:
        label = what or where
        if value is None:
            return _Section(f"{where}.", {})
        if not isinstance(value, dict):
            raise self.error(label, f"expected a mapping, found {value!r}")
        for key in value:
            if key not in allowed:
                raise self.error(
                    label, f"unknown key {key!r}", hint="expected only " + ", ".join(allowed)
                )
        return _Section(f"{where}." if where else "", value)

    def activator(self, value: object, where: str) -> str:
        if value not in ACTIVATORS:
            raise self.error(
                where,
                f"unknown activator {value!r}",
                hint=f"use one of {', '.join(ACTIVATORS)}",
            )
        return str(value)

    def engine_url(self, value: object, where: str) -> str:
        text = self.text(value, where)
        if urlsplit(text).scheme not in _ENGINE_SCHEMES:
            raise self.error(
                where,
                f"{text!r} is not a container engine address",
                hint="e.g. unix:///var/run/docker.sock, unix:///run/podman/podman.sock or "
                "tcp://host:2375",
            )
        return text

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"expected a non-empty string, found {value!r}")
        return value.strip()

    def platform(self, value: object, where: str) -> str:
        text = self.text(value, where)
        if not all(c.isascii() and (c.isalnum() or c in "._+-") for c in text):
            raise self.error(
                where,
                f"{text!r} is not a platform name",
                hint="use an os-release style ID: letters, digits, '.', '_', '+' and '-'",
            )
        return text

    def product_version(self, value: object, where: str) -> ProductVersion:
        if isinstance(value, float):
            raise self.error(
                where,
                f"{value!r} was read as a number",
                hint="quote it, e.g. '\"4.10\"', so that YAML keeps it as written",
            )
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        try:
            return ProductVersion.parse(self.text(value, where))
        except InvalidVersion as error:
            raise self.error(where, error.message, error.hint) from None

    def build(self, value: object, where: str) -> Build:
        try:
            return Build.parse(self.text(value, where))
        except InvalidVersion as error:
            raise self.error(where, error.message, error.hint) from None

    def architecture(self, value: object, where: str) -> str:
        return normalise_architecture(self.text(value, where))

    def boolean(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(where, f"expected true or false, found {value!r}")
        return value

    def percent(self, value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"expected a number, found {value!r}")
        number = float(value)
        if not math.isfinite(number) or not 0 <= number <= 100:
            raise self.error(where, f"{value!r} is not a percentage between 0 and 100")
        return number

    def health_seconds(self, value: object, where: str) -> float:
        return self.seconds(value, where, minimum=1)

    def stop_seconds(self, value: object, where: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise self.error(where, f"expected whole seconds, found {value!r}", hint="e.g. 10")
        return int(self.seconds(value, where, minimum=0))

    def seconds(self, value: object, where: str, *, minimum: float) -> float:
        """A duration in seconds from ``minimum`` to :data:`MAX_CONTAINER_SECONDS`."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"expected a number of seconds, found {value!r}")
        number = float(value)
        if not math.isfinite(number) or not minimum <= number <= MAX_CONTAINER_SECONDS:
            raise self.error(
                where,
                f"{value!r} is outside {minimum:g}..{MAX_CONTAINER_SECONDS} seconds",
            )
        return number

    def url(self, value: object, where: str) -> str:
        text = self.text(value, where)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.error(
                where, f"{text!r} is not an http(s) URL", hint="e.g. 'https://bsi.example.net/'"
            )
        return text

    def absolute_path(self, value: object, where: str) -> PurePosixPath:
        text = self.text(value, where)
        path = PurePosixPath(text)
        if not path.is_absolute() or ".." in path.parts:
            raise self.error(
                where,
                f"{text!r} is not an absolute path without '..'",
                hint="e.g. '/var/lib/bsi'",
            )
        return path

    def thresholds(self, value: object, where: str) -> dict[str, float]:
        if not isinstance(value, dict):
            raise self.error(
                where, f"expected a mapping of architecture to percent, found {value!r}"
            )
        table: dict[str, float] = {}
        for key, item in value.items():
            architecture = self.architecture(key, f"{where} (key {key!r})")
            table[architecture] = self.percent(item, f"{where}.{key}")
        return table
