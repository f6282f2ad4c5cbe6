"""Serving a TUF repository as static files, and keeping its timestamp fresh.

Only ``metadata/`` and ``targets/`` are served; the repository's ``staged/``
area and settings never are. Versioned files (``3.targets.json``,
``<sha256>.name``) never change, so any CDN may cache them for ever;
``timestamp.json`` changes and must always be revalidated.
"""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from bsi.errors import Conflict
from bsi.trust import refresh_timestamp
from bsi.trust.errors import ClockTrouble

log = logging.getLogger("bsi.server")

IMMUTABLE = "public, max-age=31536000, immutable"
WATCH_RETRY_MAX_SECONDS = 60.0
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
        except ClockTrouble as error:
            log.error("TUF repository: clock trouble: %s", error)
        except Exception:  # keep serving; the next round retries
            log.exception("could not refresh the TUF timestamp")
        await asyncio.sleep(every_seconds)


def targets_fingerprint(repo_dir: Path) -> frozenset[str]:
    """The versioned targets metadata files, and which ``timestamp.json`` is in place.

    Consistent snapshots name each version (``3.targets.json``) and never
    rewrite one, so the set of names changes with every publish. A publish
    writes that file first and ``timestamp.json`` last, and only the timestamp
    makes the new targets the ones served: a re-read between the two reads the
    old catalogue. So the timestamp file's identity is part of the fingerprint,
    and the watcher reads again once the publish is complete. The timestamp's
    own refresh (hourly) costs one more re-read, which finds nothing new and
    changes nothing (:meth:`~bsi.server.service.BsiService.import_catalog`).
    """
    metadata = repo_dir / "metadata"
    try:
        names = {p.name for p in metadata.glob("*targets.json")}
    except OSError:
        return frozenset()
    try:
        timestamp = (metadata / "timestamp.json").stat()
    except OSError:
        return frozenset(names)
    return frozenset({*names, f"timestamp.json {timestamp.st_ino}:{timestamp.st_mtime_ns}"})


async def watch_repository(
    repo_dir: Path,
    on_publish: Callable[[], object],
    every_seconds: float,
    seen: frozenset[str] | None = None,
) -> None:
    """Call ``on_publish`` (in a worker thread) whenever the repository's targets change.

    This is what makes ``bsi supplement publish`` into the directory a running
    ``bsi serve --tuf-repo-dir`` hosts reach its catalogue within seconds,
    without a restart or ``POST /v1/admin/catalog/sync-repository``. A failed
    re-read (a half-published or broken repository, a database outage) is
    retried with a doubling delay up to :data:`WATCH_RETRY_MAX_SECONDS` (a new
    change is still seen at once), its traceback logged once per change; a
    refusal (:class:`Conflict`, a known build signed again with other bytes)
    is final for that change.
    """
    last = targets_fingerprint(repo_dir) if seen is None else seen
    clock = asyncio.get_running_loop().time
    failed: frozenset[str] | None = None  # the fingerprint whose re-read last failed
    backoff, retry_at = every_seconds, 0.0
    while True:
        await asyncio.sleep(every_seconds)
        current = await run_in_threadpool(targets_fingerprint, repo_dir)
        if current == last or (current == failed and clock() < retry_at):
            continue
        try:
            await run_in_threadpool(on_publish)
            log.info("TUF repository %s changed: catalogue re-read", repo_dir)
        except Conflict as refused:
            log.error("TUF repository %s changed and was refused: %s", repo_dir, refused)
        except Exception as error:
            if current != failed:
                log.exception("could not re-read the TUF repository %s; will retry", repo_dir)
                backoff = every_seconds
            else:
                log.warning("TUF repository %s still unreadable: %s", repo_dir, error)
            backoff = min(backoff * 2, WATCH_RETRY_MAX_SECONDS)
            failed, retry_at = current, clock() + backoff
            continue
        last, failed = current, None
