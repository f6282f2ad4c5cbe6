"""``bsi`` as a real subprocess for command-level tests: any command, or ``bsi serve``
on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from pgcluster import free_port


def run_bsi(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    unset: tuple[str, ...] = (),
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """``python -m bsi ARGS`` with this environment plus ``env`` less ``unset``; never raises
    on a non-zero exit (callers assert on ``returncode``, ``stdout`` and ``stderr``)."""
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "-m", "bsi", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**environment, **(env or {})},
    )


@contextlib.contextmanager
def bsi_serve(*args: str | Path, timeout: float = 90) -> Iterator[str]:
    """Start ``bsi serve ARGS``, wait for /healthz, yield its base URL, stop it with SIGINT."""
    with bsi_serving(*args, timeout=timeout) as (url, _):
        yield url


@contextlib.contextmanager
def bsi_serving(
    *args: str | Path, timeout: float = 90
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """:func:`bsi_serve`, yielding the process too (its workers are its children)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bsi", "serve", "--port", str(port), *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"bsi serve exited: {process.communicate()[1]}")
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("bsi serve did not come up")
            time.sleep(0.1)
        yield url, process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
