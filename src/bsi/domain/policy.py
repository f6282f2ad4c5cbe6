"""The combined software-update policy one device is under.

This is what combining every ``softwareupdate.settings`` declaration by
Apple's ``combinetype`` rules, plus every ``enforcement.specific``
declaration, yields for eligibility. Defaults are Apple's schema defaults, so
a device with no declarations behaves as an unmanaged one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class InstallSecurityUpdate(StrEnum):
    """``AutomaticActions.InstallSecurityUpdate``; enum-last order is declaration order."""

    ALLOWED = "Allowed"
    ALWAYS_ON = "AlwaysOn"
    ALWAYS_OFF = "AlwaysOff"


@dataclass(frozen=True, slots=True)
class Enforcement:
    """One ``softwareupdate.enforcement.specific`` declaration.

    ``deadline`` is a naive datetime: Apple's ``TargetLocalDateTime`` is local
    time without a zone, so it is compared with the device's local clock.
    """

    target_os_version: str
    deadline: datetime
    target_build_version: str | None = None
    details_url: str | None = None
    identifier: str = ""


@dataclass(frozen=True, slots=True)
class SoftwareUpdatePolicy:
    """The effective policy: Apple's defaults unless a declaration says otherwise."""

    install_security_update: InstallSecurityUpdate = InstallSecurityUpdate.ALLOWED
    rapid_security_response_enable: bool = True
    rapid_security_response_enable_rollback: bool = True
    enforcements: tuple[Enforcement, ...] = field(default_factory=tuple)
