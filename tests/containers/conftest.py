"""One Podman service for the whole test session (starting one costs seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from container_engine import Engine, podman_service


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Podman's Docker-compatible API on a private socket and private storage."""
    with podman_service(tmp_path_factory.mktemp("podman")) as running:
        yield running
