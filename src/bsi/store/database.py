"""Opening the database and keeping its schema current.

One URL picks the backend: ``sqlite:///path`` (the embedded default) or
``postgresql+psycopg://user@host/db``. SQLite is tuned for a server: WAL so
readers never wait for the writer, a busy timeout instead of "database is
locked" errors, and foreign keys on.

Acknowledged means durable on both: SQLite runs ``synchronous=FULL`` (in WAL
mode, every commit syncs the log before it returns; ``NORMAL`` lost
acknowledged status reports at a power cut), and PostgreSQL keeps its own
``synchronous_commit=on`` default. Status reports are group-committed, so the
sync is paid once per batch, not once per report.

Nothing waits for ever on a database that is away or frozen: connecting gives
up after :data:`CONNECT_TIMEOUT` seconds, a PostgreSQL statement after
:data:`STATEMENT_TIMEOUT`, waiting for a pooled connection after
:data:`POOL_TIMEOUT`, and SQLite's write lock after :data:`BUSY_TIMEOUT`. The
server turns each into ``503`` with ``Retry-After``.

SQLite's log is copied back into the database file (a checkpoint) off the
status writer's path: by default SQLite checkpoints inside whichever commit
takes the log past 1,000 pages, and at a million devices, where each report
dirties pages of its own, that was 43 % of the writer's time and cost a
third of the status throughput (issue 18). A server runs :func:`checkpoint`
every :data:`CHECKPOINT_SECONDS` from a background task instead; a commit
still checkpoints when the log passes :data:`WAL_AUTOCHECKPOINT_PAGES` (a
process that runs no such task, or one that falls behind), and the log file is
cut back to that size once copied (``journal_size_limit``), so the log stays
bounded either way, but for pages a long-running reader still uses.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from bsi.errors import BsiError


class DatabaseError(BsiError):
    """The database cannot be reached, or its schema is not what this bsi expects."""


CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT = 30
POOL_TIMEOUT = 10
BUSY_TIMEOUT = 30
CHECKPOINT_SECONDS = 0.5
"""How often a server checkpoints SQLite's log (:func:`checkpoint`)."""
WAL_AUTOCHECKPOINT_PAGES = 16384
"""Pages (4 KiB each, 64 MiB) of SQLite log past which a commit checkpoints it itself
(SQLite's default is 1,000): the bound when background checkpoints do not keep up."""
WAL_FILE_LIMIT_BYTES = WAL_AUTOCHECKPOINT_PAGES * 4096
"""The size SQLite's log file is cut back to once copied (``journal_size_limit``)."""


BACKENDS = ("sqlite", "postgresql")
"""The databases bsi runs on."""
_URL_HINT = "use sqlite:///path/to/bsi.db or postgresql+psycopg://user@host/db"


def database_backend(url: str) -> str:
    """The backend ``url`` names, one of :data:`BACKENDS`; :class:`DatabaseError` when it
    is not a URL or names another database. Opens nothing."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as error:
        raise DatabaseError(f"{url!r} is not a database URL", hint=_URL_HINT) from error
    if backend not in BACKENDS:
        raise DatabaseError(f"unsupported database {backend!r} in {url!r}", hint=_URL_HINT)
    return backend


def open_engine(url: str, *, pool_size: int = 40) -> Engine:
    # As many pooled connections as the server has worker threads (40), so that
    # connections are reused instead of opened and closed under load: SQLAlchemy's
    # default of 5 had SQLite open a connection (and set its pragmas) for most
    # status reports once more than 5 threads read at once.
    if database_backend(url) == "sqlite":
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=10,
            pool_timeout=POOL_TIMEOUT,
            connect_args={"timeout": BUSY_TIMEOUT},
        )
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT,
        connect_args={
            "connect_timeout": CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}",
        },
    )


WRITE = {"bsi_write": True}
"""Execution options marking a transaction that will write (see :func:`_begin_sqlite`)."""


class Sessions:
    """Transactions on one engine: reads, and writes marked :data:`WRITE`.

    The base of every SQLAlchemy store, so the one rule (a write session
    carries the ``bsi_write`` option that serialises SQLite writers) is
    written once.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(**WRITE), expire_on_commit=False)

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._write.begin() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with self._read.begin() as session:
            yield session


def _tune_sqlite(connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event open transactions, not the sqlite3 module.
    connection.isolation_level = None
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT * 1000}")
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={WAL_FILE_LIMIT_BYTES}")
    cursor.close()


def database_cause(error: BaseException) -> BaseException:
    """The database driver's own error under a SQLAlchemy one (its ``orig``), else
    ``error``: what the database said, without SQLAlchemy's text around it, which also
    holds the statement and its parameters."""
    return getattr(error, "orig", None) or error


def checkpoint(engine: Engine) -> tuple[int, int] | None:
    """Copy what SQLite's log holds back into the database file, without waiting for
    or blocking anyone (``PRAGMA wal_checkpoint(PASSIVE)``): a reader or writer at
    work keeps its pages in the log for the next checkpoint. Returns (pages in the
    log, pages copied so far), or None on PostgreSQL, which checkpoints itself.
    Raises :class:`DatabaseError` when the database cannot be reached."""
    if engine.dialect.name != "sqlite":
        return None
    try:
        with engine.connect() as connection:
            row = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    except (OperationalError, PoolTimeout) as error:  # away, or every connection busy
        cause = database_cause(error)
        raise DatabaseError(f"cannot checkpoint {engine.url!r}: {cause}") from error
    _busy, logged, copied = row
    return int(logged), int(copied)


def _begin_sqlite(connection: Connection) -> None:
    """Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``).

    A deferred transaction that reads, then writes after another writer
    committed, fails at once with "database is locked"; an immediate one
    waits its turn under the busy timeout instead.
    """
    immediate = connection.get_execution_options().get("bsi_write", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _alembic_config(engine: Engine | None = None) -> Config:
    """Alembic's configuration: the revision scripts shipped in the package, and the
    engine its environment migrates (none to read the scripts alone)."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("bsi.store") / "migrations"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> str:
    """Bring the schema to the newest revision; returns that revision.

    A database already there is left alone without running Alembic: its
    environment loads every revision script, which is most of a server's start
    on the embedded default (``bsi serve`` upgrades at each start).
    """
    head = head_revision()
    try:
        if current_revision(engine) == head:
            return head
        command.upgrade(_alembic_config(engine), "head")
    except OperationalError as error:
        raise DatabaseError(f"cannot migrate {engine.url!r}: {error.orig}") from error
    return head


@functools.cache
def head_revision() -> str:
    """The newest revision this bsi has (read once per process: the scripts are its own)."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current_schema(engine: Engine) -> None:
    """Refuse to serve from a database older or newer than this bsi."""
    try:
        current = current_revision(engine)
    except OperationalError as error:
        raise DatabaseError(f"cannot open {engine.url!r}: {error.orig}") from error
    head = head_revision()
    if current != head:
        raise DatabaseError(
            f"database schema is at {current or 'nothing'}, this bsi needs {head}",
            hint="run 'bsi db upgrade' with the same --database-url",
        )
