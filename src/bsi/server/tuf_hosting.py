"""Serving a TUF repository as static files, and keeping its timestamp fresh.

Only ``metadata/`` and ``targets/`` are served; the repository's ``staged/``
area and settings never are. Versioned files (``3.targets.json``,
``<sha256>.name``) never change, so any CDN may cache them for ever;
``timestamp.json`` changes and must always be revalidated.
"""

import asyncio
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from bsi.trust import refresh_timestamp

log = logging.getLogger("bsi.server")

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


class RepositoryFiles(StaticFiles):
    """Static files with the cache headers a TUF repository wants."""

    def file_response(
        self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        versioned = Path(str(full_path)).name != "timestamp.json"
        response.headers["Cache-Control"] = IMMUTABLE if versioned else REVALIDATE
        return response


def mount_repository(app: FastAPI, repo_dir: Path) -> None:
    for part in ("metadata", "targets"):
        (repo_dir / part).mkdir(parents=True, exist_ok=True)
        app.mount(f"/tuf/{part}", RepositoryFiles(directory=repo_dir / part), name=f"tuf-{part}")


async def refresh_forever(repo_dir: Path, keys_dir: Path, every_seconds: float) -> None:
    """Re-sign timestamp (and snapshot when due) well inside their expiry."""
    while True:
        try:
            result = await run_in_threadpool(refresh_timestamp, repo_dir, keys_dir)
            for warning in result.warnings:
                log.warning("TUF repository: %s", warning)
        except Exception:  # keep serving; the next round retries
            log.exception("could not refresh the TUF timestamp")
        await asyncio.sleep(every_seconds)
