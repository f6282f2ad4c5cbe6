"""``bsi serve``, ``bsi db`` and ``bsi api-key``: the server and its database.

Their flags come from the settings declaration (:mod:`bsi.server.settings`,
through :func:`bsi.commands.settings.settings_options`). ``bsi.cli`` loads
this module only when one of these commands runs or ``bsi --help`` lists them.
"""

from __future__ import annotations

import functools
import os
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from bsi import __version__
from bsi.commands.settings import settings_options
from bsi.server.settings import DatabaseSettings, ServeSettings

server_app = typer.Typer(add_completion=False)
db_app = typer.Typer(help="The server's database.", no_args_is_help=True)
server_app.add_typer(db_app, name="db")
api_key_app = typer.Typer(help="Admin API keys.", no_args_is_help=True)
server_app.add_typer(api_key_app, name="api-key")


@functools.cache
def server_commands() -> TyperGroup:
    """The commands of this module as one group, built once."""
    return typer.main.get_group(server_app)


@server_app.command("serve")
@settings_options(ServeSettings)
def serve(settings: ServeSettings) -> None:
    """Run the bsi server: DDM endpoints for devices, enrollment, and the admin API.

    With no --database-url it keeps a SQLite database in --data-dir, creating
    and migrating it on first start, and writes the first admin API key to
    <data-dir>/admin-api-key. OpenAPI docs are served at /docs. Every flag has
    a BSI_* variable; a flag beats its variable.
    """
    import uvicorn

    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Set before any worker imports prometheus_client: each worker writes its
        # counters here and /metrics, answered by any one, sums them (bsi.server.metrics).
        import atexit
        import shutil
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="bsi-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    from bsi.server.app import ADMIN_KEY_FILE, prepare
    from bsi.server.asgi import SUPERVISOR_PID
    from bsi.server.settings import to_environment

    prepare(settings)  # migrate and bootstrap once, before any worker starts
    os.environ.update(to_environment(settings))
    # Workers stop when this process does, even if it is SIGKILLed.
    os.environ[SUPERVISOR_PID] = str(os.getpid()) if settings.workers > 1 else ""
    console = Console(stderr=True)
    console.print(
        f"bsi {__version__} serving on http://{settings.host}:{settings.port} (API docs: /docs)"
    )
    console.print(f"console: http://{settings.host}:{settings.port}/ (sign in with an API key)")
    if settings.embedded:
        console.print(f"data: {settings.resolved_database_url()}")
        console.print(f"admin API key: {settings.data_dir / ADMIN_KEY_FILE}")
    uvicorn.run(
        "bsi.server.asgi:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,  # open wake-up long polls must not hold a stop
    )


@db_app.command("upgrade")
@settings_options(DatabaseSettings)
def db_upgrade(settings: DatabaseSettings) -> None:
    """Create or migrate the database schema to this bsi's version (Alembic)."""
    from bsi.store.database import open_engine, upgrade

    if settings.embedded:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    revision = upgrade(open_engine(settings.resolved_database_url()))
    typer.echo(f"database at revision {revision}")


@api_key_app.command("create")
@settings_options(DatabaseSettings)
def api_key_create(
    name: Annotated[str, typer.Argument(help="A name to recognise the key by.")],
    settings: DatabaseSettings,
    role: Annotated[str, typer.Option(help="admin or read-only")] = "read-only",
) -> None:
    """Create an admin API key and print it (it is stored only as a hash)."""
    from bsi.server.app import utc_now
    from bsi.store.database import open_engine, require_current_schema
    from bsi.store.store import Store

    engine = open_engine(settings.resolved_database_url())
    require_current_schema(engine)
    typer.echo(Store(engine).create_api_key(name, role, utc_now()))
