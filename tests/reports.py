"""Realistic DDM status reports for tests."""

from __future__ import annotations

from typing import Any


def macos_report(
    version: str = "26.3.1",
    build: str = "25D2128",
    device_id: str = "J413AP",
    supplemental: str = "",
    extra: str = "",
) -> dict[str, Any]:
    """A full report from a Mac, as DDM nests it."""
    return {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "family": "macOS",
                    "version": version,
                    "build-version": build,
                    "supplemental": {"build-version": supplemental, "extra-version": extra},
                },
                "model": {"identifier": "Mac14,2", "family": "Mac"},
            },
            "softwareupdate": {"device-id": device_id, "install-state": "none"},
        },
        "Errors": [],
    }


def supplemental_report(build: str, extra: str = "(a)") -> dict[str, Any]:
    """A partial report: only the supplemental build changed."""
    return {
        "StatusItems": {
            "device": {
                "operating-system": {
                    "supplemental": {"build-version": build, "extra-version": extra}
                }
            }
        },
        "Errors": [],
    }


def failed_install_report(build: str, reason: str, version: str = "26.3.1 (a)") -> dict[str, Any]:
    """A full macOS report of a device whose install of ``build`` failed (``reason``:
    ``softwareupdate.failure-reason``; ``health-check-failed: ...`` for a rollback)."""
    report = macos_report()
    report["StatusItems"]["softwareupdate"] = {
        "install-state": "failed",
        "pending-version": {"os-version": version, "build-version": build},
        "failure-reason": {"reason": reason, "count": 1},
    }
    return report
