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
