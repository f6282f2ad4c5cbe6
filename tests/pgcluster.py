"""A throwaway PostgreSQL server for tests: its own data directory, loopback only.

PostgreSQL refuses to run as root, so under root (as in CI) the cluster runs
as the ``postgres`` system user that Debian's package creates. Each test gets
a fresh database copied from a migrated template, which is much faster than
migrating every time and keeps tests independent.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

TEMPLATE = "bsi_template"
"""The migrated database every test database is copied from."""


class PostgresUnavailable(Exception):
    pass


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    raise PostgresUnavailable(f"{name} not found (install Debian's postgresql package)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a cluster; yields its admin URL base ``postgresql+psycopg://postgres@127.0.0.1:PORT``."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    root = Path(tempfile.mkdtemp(prefix="bsi-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    try:
        subprocess.run(
            _as_postgres([initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        # A throwaway cluster: what tests check survives a crash of a process (the
        # operating system keeps the writes), never of the machine, so PostgreSQL
        # need not wait for the disk. Tests of durability itself use SQLite on a
        # loop-mounted file system (tests/loopfs.py).
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} -k {sockets} -c max_connections=200"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            _as_postgres(
                [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    except subprocess.CalledProcessError as error:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        raise PostgresUnavailable(
            f"could not start PostgreSQL: {error.stderr.decode(errors='replace')}{log}"
        ) from error
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(base_url: str, name: str, template: str | None = None) -> str:
    """Create ``name`` (optionally as a copy of ``template``); returns its SQLAlchemy URL."""
    dsn = base_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as connection:
        suffix = f" TEMPLATE {template}" if template else ""
        if template and connection.info.server_version >= 150000:
            suffix += " STRATEGY FILE_COPY"  # a small database: copying files beats the WAL
        for attempt in range(50):
            try:
                connection.execute(f"CREATE DATABASE {name}{suffix}")  # type: ignore[arg-type]
                break
            except psycopg.errors.ObjectInUse:  # template still has a connection closing
                time.sleep(0.1 * (attempt + 1))
    return f"{base_url}/{name}"


def drop_database(base_url: str, name: str) -> None:
    """Drop ``name`` and cut its connections: a session's databases would otherwise fill
    the disk with a copy of the template each, all removed only at the end."""
    dsn = base_url.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]
