"""A throwaway PostgreSQL cluster in a temporary directory, for benchmarks and tests.

    with postgres_cluster() as cluster:
        url = cluster.create_database("bsi")  # postgresql+psycopg://postgres@127.0.0.1:PORT/bsi
        ...

It finds ``initdb`` and ``pg_ctl`` on ``PATH`` or under
``/usr/lib/postgresql/*/bin``, creates a cluster that trusts local
connections, listens only on 127.0.0.1 on a free port (its Unix socket stays
inside the temporary directory), and on leaving (also on an error or Ctrl-C)
stops it and deletes the directory. PostgreSQL refuses to run as root, so as
root the cluster belongs to, and runs as, the ``postgres`` OS user.

Durability settings stay at PostgreSQL's defaults (``fsync``,
``synchronous_commit``): numbers measured here are what a real server pays.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

OS_USER = "postgres"
"""The OS user the cluster runs as when we are root."""


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries here, or the cluster would not start."""


@dataclass(frozen=True, slots=True)
class PgCluster:
    bin_dir: Path
    root: Path
    port: int
    user: str = "postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL (``driver="postgresql"`` gives a libpq one)."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL."""
        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None


def find_bin_dir() -> Path:
    """The directory holding ``pg_ctl`` and ``initdb``: on PATH, else the newest installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for candidate in candidates:
        if (candidate / "pg_ctl").exists() and (candidate / "initdb").exists():
            return candidate
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_cluster_user() -> list[str]:
    return ["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else []


def _run(command: list[str], cwd: Path, timeout: float) -> None:
    done = subprocess.run(
        _as_cluster_user() + command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise PostgresUnavailable(
            f"{' '.join(command[:2])} failed ({done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )


@contextlib.contextmanager
def postgres_cluster(
    *,
    max_connections: int = 200,
    settings: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Iterator[PgCluster]:
    """A running cluster on 127.0.0.1, stopped and deleted when the block ends.

    ``settings`` are extra ``-c name=value`` server settings.
    """
    bin_dir = find_bin_dir()
    root = Path(tempfile.mkdtemp(prefix="bsi-pg-"))
    cluster = PgCluster(bin_dir, root, free_port())
    started = False
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OS_USER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
        _run(
            [
                str(bin_dir / "initdb"),
                "--pgdata",
                str(cluster.data_dir),
                "--username",
                cluster.user,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",  # only initdb's own final flush; the server keeps fsync on
            ],
            root,
            timeout,
        )
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(cluster.port),
            "unix_socket_directories": str(root),
            "max_connections": str(max_connections),
            **(settings or {}),
        }
        server_options = " ".join(f"-c {name}={value}" for name, value in options.items())
        started = True
        try:
            _run(
                [
                    str(bin_dir / "pg_ctl"),
                    "start",
                    "--pgdata",
                    str(cluster.data_dir),
                    "--log",
                    str(cluster.log_file),
                    "--options",
                    server_options,
                    "--wait",
                    "--timeout",
                    str(int(timeout)),
                ],
                root,
                timeout + 10,
            )
        except PostgresUnavailable as error:
            log = cluster.log_file.read_text(errors="replace") if cluster.log_file.exists() else ""
            raise PostgresUnavailable(f"{error}\n{log[-3000:]}".strip()) from None
        yield cluster
    finally:
        if started:
            _stop(cluster, timeout)
        shutil.rmtree(root, ignore_errors=True)


def _stop(cluster: PgCluster, timeout: float) -> None:
    """Fast shutdown; if that fails, an immediate one of the postmaster we started."""
    with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
        _run(
            [
                str(cluster.bin_dir / "pg_ctl"),
                "stop",
                "--pgdata",
                str(cluster.data_dir),
                "--mode",
                "fast",
                "--wait",
                "--timeout",
                str(int(timeout)),
            ],
            cluster.root,
            timeout + 10,
        )
        return
    pid = cluster.postmaster_pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
