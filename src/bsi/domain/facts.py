"""What bsi knows about one device when it decides for it.

The same facts come from a DDM status report (Apple devices) or from the Linux
agent's own probes; eligibility reads only this type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bsi.domain.containers import ContainerFacts
from bsi.domain.prerequisite import PackageManager, PackageVersion
from bsi.domain.versions import Build, ExtraVersion, ProductVersion


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """One device's platform, OS, installed supplement, hardware and power.

    ``software_update_device_id`` is the id the device uses to look up updates
    (DDM ``softwareupdate.device-id``: a board id such as ``J413AP`` on a Mac, a
    product type such as ``iPhone14,2`` on an iPhone); supplements name their
    supported devices that way. ``model_identifier`` (``Mac14,2``) is the
    fallback when a device does not report it.

    ``battery_percent`` is ``None`` when unknown; ``on_battery`` is ``None``
    when unknown, ``False`` on mains power or for devices without a battery.
    ``utc_offset_minutes`` is the device's local offset, used for enforcement
    deadlines, which Apple defines in local time. ``restart_pending`` is true
    while the installed supplement is on disk but some affected process still
    runs the old content (the agent's ``bsi.agent.restart-pending`` item).

    ``build`` is ``None`` on a stock distribution (no ``BUILD_ID``): such a
    host is placed by its packages. ``packages`` are the installed versions of
    the packages the catalogue names, from ``package_manager``'s database;
    ``file_digests`` maps a path (no leading ``/``) the catalogue names to its
    SHA-256, ``None`` when the file is missing. Either is ``None`` when not
    reported (Apple devices), which eligibility treats as unknown, never as
    "not installed". ``packages_asked`` are the names the agent looked up (the
    catalogue's, when it read them): a package a supplement names that is neither
    installed nor asked about is unknown, not absent (``None``: an agent that does not
    say, whose absent packages count as not installed). ``containers`` are the
    running containers of a Docker or Podman host (``None``: not a container host);
    an image prerequisite places the host by their base images.
    """

    platform: str
    product_version: ProductVersion
    build: Build | None
    supplemental_build: Build | None = None
    supplemental_extra: ExtraVersion | None = None
    model_identifier: str | None = None
    software_update_device_id: str | None = None
    architecture: str | None = None
    on_battery: bool | None = None
    battery_percent: float | None = None
    utc_offset_minutes: int = 0
    restart_pending: bool = False
    package_manager: PackageManager | None = None
    packages: tuple[PackageVersion, ...] | None = None
    packages_asked: frozenset[str] | None = None
    file_digests: Mapping[str, str | None] | None = None
    containers: tuple[ContainerFacts, ...] | None = None
