"""How many device check-ins per second the real bsi server serves, next to bare FastAPI.

For each database (SQLite, the embedded default; PostgreSQL, a throwaway
cluster from ``benchmarks/pg.py``) it:

1. seeds ``--devices`` enrolled devices straight into the database (each with a
   full status report from the sample fleet already stored, as a device that
   has checked in before), the sample catalogue, and one software-update
   declaration assigned to the default group;
2. starts the real server, ``python -m bsi serve``, on 127.0.0.1 with
   ``--workers`` processes;
3. drives it from a separate process (``benchmarks/loadgen.py``, asyncio over raw
   keep-alive connections) with ``--concurrency`` connections, each request a
   random device: ``--unchanged-share`` of them ``GET /v1/ddm/tokens`` with the
   token the device holds in ``If-None-Match`` (an unchanged check-in: 304), the
   rest ``PUT /v1/ddm/status`` with partial reports that change the install
   state or the supplemental build, and some full reports;
4. starts a bare FastAPI app (``GET /ping``) under the same uvicorn settings and
   worker count and drives it the same way, for reference.

Each measurement has a 2 s warm-up, then ``--seconds`` measured. It prints
requests/s, p50 and p99 latency for both, their ratio, errors, the share of
token check-ins served 304, the server's CPU (100 % = one core) and memory
(summed over its worker processes), and whether the target is met: 1,100
mixed check-ins/s (one million devices checking in every 15 minutes) with
p99 under 100 ms. Missing the target still exits 0; the exit status is 1 only
when the benchmark itself failed (a server did not start, or more than 1 %
of requests failed).

The device count matters: the server caches a credential's identity for a
minute, so with 10,000 devices the cache fills during the run (the line of
requests completed per second shows throughput climbing), while a million
devices checking in every 15 minutes would miss it on every check-in.
``--devices 1000000`` measures that case; seeding takes several minutes per
database (282-343 s on 2 cores with SQLite); ``--seed-cache DIR`` keeps each seeded
SQLite database in DIR and copies it in later runs with as many devices. The seeding's
writes are flushed to disk before the server starts (``os.sync``): the kernel's
write-back of 1.7 GB otherwise ran during the measurement. ``--timeline DIR`` keeps
every measured request for a closer look (with ``--publish`` too: the quiet window and the
one with the change's pass, whose start and end in that file it prints).

    .venv/bin/python benchmarks/checkin.py                     # SQLite and PostgreSQL
    .venv/bin/python benchmarks/checkin.py --database sqlite --workers 2
    .venv/bin/python benchmarks/checkin.py --devices 1000000 --rate 1111

``--devices 10000,100000,1000000`` measures each fleet size in turn and ends with a
growth table per database (requests/s, status reports/s, p99, server CPU per
request, each size beside the first). ``--unchanged-share 0`` sends status reports
only, so that the CPU per request is the CPU per status report.

``--rate`` switches the load to open loop: requests are due at a fixed rate and
latency counts from when each was due, so p99 is what devices would see at that
load rather than at saturation. Everything runs on 127.0.0.1; every server,
load generator and database started here is stopped at the end, also on error
or Ctrl-C. The machine's cores are shared by the server, the load generator
and PostgreSQL; each one's CPU is printed, and so is what other processes on
the machine used meanwhile: a run they disturbed says so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from fastapi import FastAPI
from loadgen import credential, device_id
from pg import PgCluster, PostgresUnavailable, postgres_cluster
from sqlalchemy import func, insert, select

from bsi.apple import sample
from bsi.domain.declarations import software_update_settings
from bsi.domain.policy import InstallSecurityUpdate
from bsi.domain.status import merge_status, parse_status_report
from bsi.durable import write_atomic
from bsi.server.app import ServerSettings, prepare
from bsi.store.database import head_revision, open_engine
from bsi.store.models import Device, SupplementalBuildChange
from bsi.store.store import DEFAULT_GROUP, Store, secret_hash

BENCHMARKS = Path(__file__).resolve().parent
HOST = "127.0.0.1"
TARGET_RPS = 1_100.0
TARGET_P99_MS = 100.0
MAX_ERROR_RATE = 0.01
WARMUP_SECONDS = 2.0
INSTALL_STATES = ("none", "downloading", "prepared", "installing")
BENCHMARK_ADMIN_KEY = "benchmark-admin-key"
"""The file in the data directory the seeding leaves an admin API key in."""

bare_app = FastAPI()
"""The reference: the least a FastAPI endpoint can do (run as ``checkin:bare_app``)."""


@bare_app.get("/ping", response_model=None)
async def ping() -> dict[str, bool]:
    return {"ok": True}


class BenchmarkFailed(RuntimeError):
    """The benchmark could not measure (as opposed to measuring a slow server)."""


# -- the fleet ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """One sample-fleet device: its stored state, and the reports it may send."""

    name: str
    columns: dict[str, Any]
    partials: list[dict[str, Any]]
    fulls: list[dict[str, Any]]


def fleet_templates() -> list[Template]:
    catalog = sample.catalog()
    templates = []
    for path in sorted(sample.fleet_path().glob("*.json")):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        reports = loaded if isinstance(loaded, list) else [loaded]  # a full report, then partials
        report = reports[0]
        state = None
        for each in reports:
            state = merge_status(state, parse_status_report(each))
        assert state is not None
        supplements = [("", "")] + [
            (str(s.build), str(s.version.extra))
            for s in catalog.supplements
            if state.build is not None and str(s.prerequisite_build) == str(state.build)
        ]
        partials: list[dict[str, Any]] = [
            {"StatusItems": {"softwareupdate": {"install-state": s}}, "Errors": []}
            for s in INSTALL_STATES
        ]
        fulls = []
        for build, extra in supplements:
            supplemental = {"build-version": build, "extra-version": extra}
            partials.append(
                {
                    "StatusItems": {
                        "device": {"operating-system": {"supplemental": supplemental}},
                        "softwareupdate": {"install-state": "none"},
                    },
                    "Errors": [],
                }
            )
            full = copy.deepcopy(report)
            full["FullReport"] = True
            full["StatusItems"]["device"]["operating-system"]["supplemental"] = supplemental
            fulls.append(full)
        columns = {
            "status_items": state.items,
            "status_errors": list(state.errors),
            "platform": state.platform,
            "product_version": str(state.product_version) if state.product_version else None,
            "build": str(state.build) if state.build else None,
            "supplemental_build": str(state.supplemental_build)
            if state.supplemental_build
            else None,
            "supplemental_extra": str(state.supplemental_extra)
            if state.supplemental_extra
            else None,
            "model_identifier": state.model_identifier,
        }
        templates.append(Template(path.stem, columns, partials, fulls))
    return templates


def seed_database(
    data_dir: Path, database_url: str | None, devices: int, seed: str, templates: list[Template]
) -> tuple[bytes, int]:
    """Catalogue, one assigned declaration, and ``devices`` devices that reported before."""
    service = prepare(ServerSettings(data_dir=data_dir, database_url=database_url))
    store = service.stores.database
    assert isinstance(store, Store)  # rows are written in bulk, below the store
    try:
        service.import_catalog(sample.catalog(), "bsi sample catalogue (benchmark)")
        declaration = software_update_settings(
            "com.example.bench.softwareupdate",
            install_security_update=InstallSecurityUpdate.ALWAYS_ON,
            rsr_enable=True,
        )
        service.put_declaration(declaration.to_json())
        service.assign(declaration.identifier, DEFAULT_GROUP, assigned=True)
        group_id = store.group_id(DEFAULT_GROUP)
        key = service.credential_key
        enrolled = datetime.now(UTC)
        batch: list[dict[str, Any]] = []
        with store.engine.begin() as connection:
            for index in range(devices):
                batch.append(
                    {
                        "id": device_id(seed, index),
                        "credential_hash": secret_hash(credential(key, group_id, seed, index)),
                        "group_id": group_id,
                        "enrolled_at": enrolled,
                        "last_seen_at": None,
                        **templates[index % len(templates)].columns,
                    }
                )
                if len(batch) >= 5_000:
                    connection.execute(insert(Device), batch)
                    batch = []
            if batch:
                connection.execute(insert(Device), batch)
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / BENCHMARK_ADMIN_KEY).write_text(service.create_api_key("benchmark", "admin"))
        return key, group_id
    finally:
        service.close()


def database_facts(data_dir: Path, database_url: str | None) -> dict[str, int]:
    """What the run left in the database: proof that check-ins and reports landed."""
    settings = ServerSettings(data_dir=data_dir, database_url=database_url)
    engine = open_engine(settings.resolved_database_url())
    try:
        with engine.connect() as connection:
            seen = connection.scalar(
                select(func.count()).select_from(Device).where(Device.last_seen_at.is_not(None))
            )
            changes = connection.scalar(select(func.count()).select_from(SupplementalBuildChange))
            decided = connection.scalar(
                select(func.count()).select_from(Device).where(Device.decision_outcome.is_not(None))
            )
    finally:
        engine.dispose()
    return {"devices_seen": seen or 0, "build_changes": changes or 0, "decided": decided or 0}


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    command: list[str],
    log_path: Path,
    ready_url: str,
    timeout: float = 120.0,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess in its own process group, up once ``ready_url`` answers 200.

    On leaving it gets SIGTERM (uvicorn shuts down gracefully and stops its
    workers); whatever of its process group is left after 30 s gets SIGKILL.
    """
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise BenchmarkFailed(
                    f"server exited with {process.returncode} before it was ready:\n"
                    + _tail(log_path)
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchmarkFailed(
                    f"server not ready at {ready_url} after {timeout:.0f} s:\n" + _tail(log_path)
                )
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


def log_problems(path: Path) -> list[str]:
    """Lines of a server log that say something went wrong: errors, each traceback's exception."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    problems = []
    in_traceback = False
    for index, line in enumerate(lines):
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace():
            problems.append(line.strip())
            in_traceback = False
        elif line.startswith(("ERROR", "CRITICAL")) or " ERROR " in line:
            problems.append(line.strip())
        if index > 1_000_000:
            break
    return problems


def _tail(path: Path, size: int = 3000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return text[-size:]


class Sampler:
    """CPU (100 % = one core) and RSS of process trees, between :meth:`start` and :meth:`stop`."""

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        self.roots = roots
        self.interval = interval
        self.first_cpu: dict[int, float] = {}
        self.last_cpu: dict[int, float] = {}
        self.rss: list[float] = []
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self) -> list[psutil.Process]:
        found = []
        for pid in self.roots:
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
        return found

    def _sample(self) -> None:
        """Add up CPU per process, own plus reaped children's.

        A process that ended (an overflow database connection, say) is then
        counted through its parent's reaped-children time, so it is dropped here.
        """
        rss = 0
        alive = set()
        for process in self._processes():
            with contextlib.suppress(psutil.Error):
                with process.oneshot():
                    times = process.cpu_times()
                    rss += process.memory_info().rss
                used = times.user + times.system + times.children_user + times.children_system
                self.first_cpu.setdefault(process.pid, used)
                self.last_cpu[process.pid] = used
                alive.add(process.pid)
        for pid in set(self.last_cpu) - alive:
            del self.first_cpu[pid], self.last_cpu[pid]
        self.rss.append(rss / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self.started = time.monotonic()
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.stopped = time.monotonic()
        used = sum(self.last_cpu[pid] - self.first_cpu[pid] for pid in self.last_cpu)
        elapsed = max(self.stopped - self.started, 1e-9)
        return {
            "cpu_percent": 100 * used / elapsed,
            "rss_mb_max": max(self.rss, default=math.nan),
            "processes": len(self.last_cpu),
        }


def machine_usage(since: Any, started: float) -> dict[str, float]:
    """Busy CPU of the whole machine since ``since`` (``psutil.cpu_times()``), 100 % = one core."""
    now = psutil.cpu_times()
    elapsed = max(time.monotonic() - started, 1e-9)
    busy = ("user", "nice", "system", "irq", "softirq", "steal")
    used = sum(getattr(now, name, 0.0) - getattr(since, name, 0.0) for name in busy)
    return {"cpu_percent": 100 * used / elapsed, "cores": float(psutil.cpu_count() or 1)}


def drive(
    args: argparse.Namespace,
    port: int,
    mode: str,
    plan: Path | None,
    watched: dict[str, list[int]],
    timeline: Path | None = None,
    on_measuring: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run the load generator against ``port``; CPU and memory of ``watched`` trees meanwhile;
    ``on_measuring`` is called (on this thread) as the measured window opens."""
    command = [
        sys.executable,
        str(BENCHMARKS / "loadgen.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--mode",
        mode,
        "--concurrency",
        str(args.concurrency),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(WARMUP_SECONDS),
    ]
    if args.rate:
        command += ["--rate", str(args.rate)]
    if plan is not None:
        command += ["--plan", str(plan)]
    if timeline is not None:
        command += ["--timeline", str(timeline)]
    samplers = {name: Sampler(roots) for name, roots in watched.items()}
    usage: dict[str, dict[str, float]] = {}
    machine_from = psutil.cpu_times()
    machine_started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(WARMUP_SECONDS + args.seconds + 120, process.kill)
    watchdog.start()
    result: dict[str, Any] | None = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("MEASURING"):
                for sampler in samplers.values():
                    sampler.start()
                machine_from, machine_started = psutil.cpu_times(), time.monotonic()
                if on_measuring is not None:
                    on_measuring()
            elif line.startswith("DONE") and all(s.started for s in samplers.values()):
                usage = {name: sampler.stop() for name, sampler in samplers.items()}
                usage["machine"] = machine_usage(machine_from, machine_started)
            elif line.startswith("{"):
                result = json.loads(line)
        process.wait(30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0 or result is None or not usage:
        raise BenchmarkFailed(f"the load generator failed (exit status {process.returncode})")
    result["usage"] = usage
    result["usage"]["loadgen"] = {"cpu_percent": result["loadgen_cpu_percent"]}
    return result


# -- one backend ----------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    backend: str
    devices: int
    bsi: dict[str, Any] = field(default_factory=dict)
    bare: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, int] = field(default_factory=dict)
    failure: str | None = None
    server_log: list[str] = field(default_factory=list)
    publish: dict[str, dict[str, float]] = field(default_factory=dict)
    """``--publish``: per server (``before``, ``after``) the change's pass and p99s."""


def prime(port: int, signing: tuple[bytes, int], seed: str, templates: list[Template]) -> str:
    """Check the server answers a device as expected; returns the group's ETag."""
    base = f"http://{HOST}:{port}"
    auth = {"Authorization": f"Bearer {credential(*signing, seed, 0)}"}
    with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
        first = client.get("/v1/ddm/tokens")
        etag = str(first.headers.get("etag", ""))
        if first.status_code != 200 or not etag:
            raise BenchmarkFailed(f"GET /v1/ddm/tokens: {first.status_code} {first.text[:300]}")
        again = client.get("/v1/ddm/tokens", headers={"If-None-Match": etag})
        if again.status_code != 304:
            raise BenchmarkFailed(f"GET /v1/ddm/tokens with If-None-Match: {again.status_code}")
        report = client.put("/v1/ddm/status", json=templates[0].partials[0])
        if report.status_code != 200:
            raise BenchmarkFailed(f"PUT /v1/ddm/status: {report.status_code} {report.text[:300]}")
    return etag


def _timeline(args: argparse.Namespace, backend: str, server: str) -> Path | None:
    if not args.timeline:
        return None
    directory = Path(args.timeline).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{backend}-{server}.tsv"


def serve_command(data_dir: Path, database_url: str | None, port: int, workers: int) -> list[str]:
    command = [sys.executable, "-m", "bsi", "serve", "--data-dir", str(data_dir)]
    command += ["--host", HOST, "--port", str(port), "--workers", str(workers)]
    return command + (["--database-url", database_url] if database_url else [])


def seed_with(
    source: Path | None,
    data_dir: Path,
    database_url: str | None,
    devices: int,
    seed: str,
    templates: list[Template],
) -> tuple[bytes, int]:
    """:func:`seed_database` by this tree, or (``source``) by the bsi in that ``src/``, in
    a process of its own (``--seed-only``), so its database is at that bsi's schema."""
    if source is None:
        return seed_database(data_dir, database_url, devices, seed, templates)
    command = [sys.executable, __file__, "--seed-only", str(data_dir), "--devices", str(devices)]
    command += ["--seed", seed] + (["--database-url", database_url] if database_url else [])
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    found = json.loads(done.stdout.splitlines()[-1])
    return bytes.fromhex(found["key"]), int(found["group_id"])


def seeded(
    args: argparse.Namespace,
    source: Path | None,
    data_dir: Path,
    database_url: str | None,
    devices: int,
    seed: str,
    templates: list[Template],
    label: str = "",
) -> tuple[tuple[bytes, int], str]:
    """:func:`seed_with`, or (``--seed-cache``, SQLite, this tree) a copy of a database
    this benchmark seeded before with as many devices, at this bsi's schema revision; then
    the seeding's writes are flushed to disk, so the kernel's write-back of them does not
    run during the measurement. ``label`` names the server in what it prints.

    Returns the signing facts and the seed the devices were made from. The cache is keyed
    by device count and schema revision only: empty it after changing the seeding."""
    started = time.monotonic()
    cached = None
    if args.seed_cache and source is None and not database_url:
        cached = args.seed_cache / f"sqlite-{devices}-{head_revision()}"
    if cached is not None and (cached / "seed.json").is_file():
        shutil.copytree(cached / "data", data_dir)
        found = json.loads((cached / "seed.json").read_text(encoding="utf-8"))
        signing, seed = (bytes.fromhex(found["key"]), int(found["group_id"])), found["seed"]
        print(f"  {label}copied {devices:,} seeded devices from {cached}", end="", flush=True)
    else:
        signing = seed_with(source, data_dir, database_url, devices, seed, templates)
        print(f"  {label}seeded {devices:,} devices", end="", flush=True)
        if cached is not None:
            shutil.rmtree(cached, ignore_errors=True)
            shutil.copytree(data_dir, cached / "data")
            facts = {"key": signing[0].hex(), "group_id": signing[1], "seed": seed}
            # Written last, atomically: a cache entry with seed.json holds a whole copy.
            write_atomic(cached / "seed.json", json.dumps(facts).encode())
    os.sync()
    print(f" in {time.monotonic() - started:.1f} s (flushed to disk)", flush=True)
    return signing, seed


def measure_publish_backend(
    args: argparse.Namespace, backend: str, templates: list[Template], work: Path, outcome: Outcome
) -> Outcome:
    """``--publish``: per server (``before``: ``--before-src``, then ``after``: this tree)
    its own database, seeded alike, and :func:`measure_publish` against it."""
    servers = [("before", args.before_src)] if args.before_src else []
    seed = f"{backend}-{os.getpid()}"
    with contextlib.ExitStack() as stack:
        cluster: PgCluster | None = None
        if backend == "postgresql":
            cluster = stack.enter_context(postgres_cluster(max_connections=200))
        for name, source in [*servers, ("after", None)]:
            env = {**os.environ, "PYTHONPATH": str(source)} if source else None
            database_url, postgres_pids = None, []
            if cluster is not None:
                database_url = cluster.create_database(f"bsi_{name}")
                upgrade = [sys.executable, "-m", "bsi", "db", "upgrade"]
                subprocess.run(
                    [*upgrade, "--database-url", database_url],
                    check=True,
                    capture_output=True,
                    timeout=120,
                    env=env,
                )
                postgres_pids = [pid] if (pid := cluster.postmaster_pid()) else []
            data_dir = work / f"data-{name}"
            signing, seed = seeded(
                args, source, data_dir, database_url, outcome.devices, seed, templates, f"{name}: "
            )
            port = args.port or free_port()
            serve = serve_command(data_dir, database_url, port, args.workers)
            log = work / f"bsi-server-{name}.log"
            with running(serve, log, f"http://{HOST}:{port}/healthz", env=env) as server:
                etag = prime(port, signing, seed, templates)
                plan = work / f"plan-{name}.json"
                write_plan(args, plan, seed, signing, etag, templates, outcome.devices)
                watched = {"server": [server.pid], "postgresql": postgres_pids}
                if not postgres_pids:
                    del watched["postgresql"]
                try:
                    outcome.publish[name] = measure_publish(
                        args, port, plan, watched, work, backend, data_dir, database_url, name
                    )
                except BenchmarkFailed as error:
                    raise BenchmarkFailed(f"{name}: {error}\n{_tail(log)}") from None
            outcome.server_log += log_problems(log)
    return outcome


def measure_backend(
    args: argparse.Namespace, backend: str, devices: int, templates: list[Template], work: Path
) -> Outcome:
    outcome = Outcome(backend, devices)
    seed = f"{backend}-{os.getpid()}"
    data_dir = work / "data"
    if args.publish:
        return measure_publish_backend(args, backend, templates, work, outcome)
    with contextlib.ExitStack() as stack:
        database_url: str | None = None
        postgres_pids: list[int] = []
        if backend == "postgresql":
            cluster: PgCluster = stack.enter_context(postgres_cluster(max_connections=200))
            database_url = cluster.create_database("bsi")
            subprocess.run(
                [sys.executable, "-m", "bsi", "db", "upgrade", "--database-url", database_url],
                check=True,
                capture_output=True,
                timeout=120,
            )
            postgres_pids = [pid] if (pid := cluster.postmaster_pid()) else []
        signing, seed = seeded(args, None, data_dir, database_url, devices, seed, templates)

        port = args.port or free_port()
        serve = serve_command(data_dir, database_url, port, args.workers)
        with running(serve, work / "bsi-server.log", f"http://{HOST}:{port}/healthz") as server:
            etag = prime(port, signing, seed, templates)
            plan = work / "plan.json"
            write_plan(args, plan, seed, signing, etag, templates, devices)
            watched = {"server": [server.pid]}
            if postgres_pids:
                watched["postgresql"] = postgres_pids
            print(f"  driving bsi on port {port} ...", flush=True)
            outcome.bsi = drive(
                args, port, "checkin", plan, watched, _timeline(args, backend, "bsi")
            )
        outcome.facts = database_facts(data_dir, database_url)
        outcome.server_log = log_problems(work / "bsi-server.log")

    port = args.port or free_port()
    bare = [
        sys.executable,
        "-m",
        "uvicorn",
        "checkin:bare_app",
        "--app-dir",
        str(BENCHMARKS),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with running(bare, work / "bare-server.log", f"http://{HOST}:{port}/ping") as server:
        print(f"  driving bare FastAPI on port {port} ...", flush=True)
        outcome.bare = drive(
            args, port, "ping", None, {"server": [server.pid]}, _timeline(args, backend, "bare")
        )
    return outcome


def write_plan(
    args: argparse.Namespace,
    plan: Path,
    seed: str,
    signing: tuple[bytes, int],
    etag: str,
    templates: list[Template],
    devices: int,
) -> None:
    """The load generator's plan: the devices, their credentials and reports."""
    plan.write_text(
        json.dumps(
            {
                "seed": seed,
                "credential_key": signing[0].hex(),
                "group_id": signing[1],
                "devices": devices,
                "unchanged_share": args.unchanged_share,
                "full_report_share": args.full_report_share,
                "initial_etag": etag,
                "templates": [
                    {"name": t.name, "partials": t.partials, "fulls": t.fulls} for t in templates
                ],
            }
        ),
        encoding="utf-8",
    )


PUBLISHED = ("iOS", "23D771330a")
"""The catalogue change ``--publish`` makes: iOS 26.3.1 (a) paused (a third of the sample
fleet runs iOS or iPadOS, which is decided against the iOS catalogue)."""


def wait_for_pass(admin: httpx.Client) -> None:
    """Until ``GET decisions/recompute`` has shown a pass and then none (a pass a route
    starts once its answer is sent: none seen within 5 s counts as done)."""
    seen, deadline = False, time.monotonic() + 5
    while True:
        running = admin.get("/decisions/recompute").json()["recomputing"]
        seen = seen or running is not None
        if running is None and (seen or time.monotonic() > deadline):
            return
        time.sleep(0.05)


class StoredDecisions:
    """The decisions in the server's database, read beside it: whether every reporting
    device has one, and whether the 20 devices of highest id decided about a build still
    are as before its pause (an every-device pass in id order reaches them last)."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        settings = ServerSettings(data_dir=data_dir, database_url=database_url)
        self.engine = open_engine(settings.resolved_database_url())
        self.ids: list[str] = []
        self.build = ""

    def all_decided(self) -> bool:
        with self.engine.connect() as connection:
            undecided = connection.scalar(
                select(func.count()).where(
                    Device.platform.is_not(None), Device.decision_reason == "not-reported"
                )
            )
        return undecided == 0

    def _offered(self) -> Any:
        """Decided about the build, and not yet for its pause (nor installed since)."""
        return (Device.decision_supplement_build == self.build) & (
            Device.decision_reason.not_in(["supplement-paused", "supplement-installed"])
        )

    def track(self, build: str) -> None:
        self.build = build
        with self.engine.connect() as connection:
            query = select(Device.id).where(self._offered()).order_by(Device.id.desc())
            self.ids = list(connection.scalars(query.limit(20)))
        if not self.ids:
            raise BenchmarkFailed(f"no device is offered {build}: nothing to time")

    def offers_left(self) -> int:
        """How many of the tracked devices are still offered the build."""
        with self.engine.connect() as connection:
            left = connection.scalar(
                select(func.count()).where(Device.id.in_(self.ids), self._offered())
            )
        return left or 0


def measure_publish(
    args: argparse.Namespace,
    port: int,
    plan: Path,
    watched: dict[str, list[int]],
    work: Path,
    backend: str,
    data_dir: Path,
    database_url: str | None,
    server_name: str,
) -> dict[str, float]:
    """Unchanged check-in p99 with no decision pass running, then while the pass a catalogue
    change triggers runs (one second into a second window of check-ins), and the pass's time.

    The change is :data:`PUBLISHED` paused. ``before`` (an earlier bsi, ``--before-src``)
    decided again for every device in id order then, with no pause between batches: its
    pass is timed until the last devices offered the build are no longer
    (:class:`StoredDecisions`). ``after`` (this tree): until ``GET decisions/recompute`` shows
    no pass; a full pass first sets what the change is compared with (the server's first
    pass is of every device).
    """
    key = (data_dir / BENCHMARK_ADMIN_KEY).read_text().strip()
    stored = StoredDecisions(data_dir, database_url)
    admin = httpx.Client(
        base_url=f"http://{HOST}:{port}/v1/admin",
        headers={"Authorization": f"Bearer {key}"},
        timeout=3600,
        limits=httpx.Limits(max_keepalive_connections=0),  # idle for a whole window
    )
    with admin:
        # Every device decided first (seeded without decisions); for this tree, also what
        # a change is compared with. Answered 503 when it outlasts the request timeout.
        # all_decided() counts over every device: asked every 2 s, and for this tree only
        # once its own pass is over, so that the count does not take a core from the pass.
        started = time.monotonic()
        admin.post("/decisions/recompute")
        if server_name == "after":
            wait_for_pass(admin)
        while not stored.all_decided():
            if time.monotonic() - started > 1800:
                raise BenchmarkFailed("devices still undecided after 30 min")
            time.sleep(2)
        print(f"  {server_name}: every device decided in {time.monotonic() - started:.1f} s")
        stored.track(PUBLISHED[1])

        def timeline_of(window: str) -> Path:  # kept in --timeline's DIR, or thrown away
            kept = _timeline(args, backend, f"{server_name}-{window}")
            return kept or work / f"{window}-{server_name}.tsv"

        quiet = drive(args, port, "checkin", plan, watched, timeline_of("quiet"))
        window: dict[str, Any] = {}
        worker: list[threading.Thread] = []

        def change() -> None:
            try:
                timed_change()
            except Exception as error:  # reported by the caller: the thread's own is lost
                window["failed"] = error

        def timed_change() -> None:
            time.sleep(1.0)
            opened = time.monotonic()
            window["from"] = opened - window["measuring"]
            platform, build = PUBLISHED
            admin.post(f"/supplements/{platform}/{build}/pause").raise_for_status()
            if server_name == "before":  # one pass over every device in id order
                while stored.offers_left():
                    if time.monotonic() - opened > 1800:
                        raise BenchmarkFailed("the change's pass did not end in 30 min")
                    time.sleep(0.05)
            else:
                wait_for_pass(admin)
            window["until"] = time.monotonic() - window["measuring"]
            window["pass_s"] = time.monotonic() - opened

        def measuring() -> None:
            window["measuring"] = time.monotonic()
            worker.append(threading.Thread(target=change, daemon=True))
            worker[0].start()

        timeline = timeline_of("publish")
        during = drive(args, port, "checkin", plan, watched, timeline, on_measuring=measuring)
        worker[0].join()
    stored.engine.dispose()
    if "failed" in window or "until" not in window:
        raise BenchmarkFailed(f"the catalogue change failed: {window.get('failed')!r}")
    inside, outside = [], []
    for line in timeline.read_text().splitlines()[1:]:
        started, latency, kind, _outcome = line.split("\t")
        if kind == "tokens":
            within = window["from"] <= float(started) <= window["until"]
            (inside if within else outside).append(float(latency))
    return {
        "pass_s": window["pass_s"],
        "devices": window.get("devices", math.nan),
        "quiet_p99_ms": quiet["kinds"]["tokens"]["p99_ms"],
        "during_p99_ms": _percentile(inside, 0.99),
        "during_count": float(len(inside)),
        "rest_p99_ms": _percentile(outside, 0.99),
        "errors": float(quiet["errors"] + during["errors"]),
        "measured_s": args.seconds,
        "from_s": window["from"],
        "until_s": window["until"],
    }


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def print_publish(args: argparse.Namespace, outcome: Outcome) -> bool:
    """The ``--publish`` table; the goal is p99 during the pass at most 2x the quiet p99."""
    title = "SQLite (embedded default)" if outcome.backend == "sqlite" else "PostgreSQL"
    print()
    print(
        f"== {title}: {outcome.devices:,} devices, a catalogue change under "
        f"{args.rate:,.0f} req/s of check-ins ({100 * args.unchanged_share:.0f} % unchanged) =="
    )
    print(
        f"  {'server':10}{'pass s':>9}{'quiet p99':>11}{'during p99':>12}{'ratio':>7}"
        f"{'checkins during':>17}{'errors':>8}"
    )
    sound = True
    for name, found in outcome.publish.items():
        ratio = found["during_p99_ms"] / found["quiet_p99_ms"]
        print(
            f"  {name:10}{found['pass_s']:>9.1f}{found['quiet_p99_ms']:>11.1f}"
            f"{found['during_p99_ms']:>12.1f}{ratio:>7.2f}{found['during_count']:>17,.0f}"
            f"{found['errors']:>8,.0f}"
        )
        if args.timeline:
            print(
                f"  {'':10}its pass: {found['from_s']:.1f}-{found['until_s']:.1f} s of "
                f"{outcome.backend}-{name}-publish.tsv"
            )
        if found["pass_s"] > found["measured_s"] - 1:
            print(f"  !!! {name}: the pass outlasted the window: raise --seconds")
            sound = False
    after = outcome.publish.get("after")
    if after is not None:
        ratio = after["during_p99_ms"] / after["quiet_p99_ms"]
        print(
            f"  goal: unchanged check-in p99 during a publish <= 2x: "
            f"{'met' if ratio <= 2 else 'MISSED'} ({ratio:.2f}x)"
        )
    if "before" in outcome.publish and after is not None:
        before = outcome.publish["before"]
        print(f"  pass time after/before: {after['pass_s'] / before['pass_s']:.2f}x")
    return sound


# -- report ---------------------------------------------------------------------------------


def provenance() -> str:
    """What was measured: bsi's version and commit, and the machine."""
    import platform

    import uvicorn

    from bsi import __version__

    described = f"bsi {__version__}"
    git = ["git", "-C", str(BENCHMARKS.parent)]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if head:
            described += f" at commit {head}" + (" + uncommitted changes in src/" if dirty else "")
    return (
        f"{described}; Python {platform.python_version()}, uvicorn {uvicorn.__version__}; "
        f"{psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB"
    )


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.1f}"


def _others(result: dict[str, Any]) -> float:
    """Machine CPU used by neither the server, the load generator nor PostgreSQL."""
    usage: dict[str, dict[str, float]] = result["usage"]
    ours = sum(
        usage[name]["cpu_percent"] for name in ("server", "loadgen", "postgresql") if name in usage
    )
    return max(0.0, usage["machine"]["cpu_percent"] - ours)


def _cpu_per_request(args: argparse.Namespace, result: dict[str, Any]) -> float:
    """Server CPU milliseconds per measured request (all worker processes)."""
    count = result["all"]["count"]
    cpu_seconds = result["usage"]["server"]["cpu_percent"] / 100 * args.seconds
    return 1000 * cpu_seconds / count if count else math.nan


def print_growth(args: argparse.Namespace, outcomes: list[Outcome]) -> None:
    """Each backend's figures by fleet size, beside its smallest fleet's: the status
    path should not slow down as the fleet grows (issue 18: ingest at 1 M devices
    >= 0.9x its rate at 10 k)."""
    for backend in dict.fromkeys(o.backend for o in outcomes):
        measured = [o for o in outcomes if o.backend == backend and o.failure is None]
        if len(measured) < 2:
            continue
        print()
        print(f"  growth, {backend}:")
        print(
            f"  {'devices':>12}{'req/s':>10}{'status/s':>10}{'p99 ms':>10}"
            f"{'CPU ms/req':>12}{'vs first':>10}{'bare req/s':>12}"
        )
        first = measured[0].bsi["all"]["rps"]
        for o in measured:
            result = o.bsi["all"]
            status = o.bsi["kinds"].get("status", {"count": 0})["count"] / args.seconds
            print(
                f"  {o.devices:>12,}{result['rps']:>10,.0f}{status:>10,.0f}"
                f"{_ms(result['p99_ms']):>10}{_cpu_per_request(args, o.bsi):>12.3f}"
                f"{result['rps'] / first if first else math.nan:>9.2f}x"
                f"{o.bare['all']['rps']:>12,.0f}"
            )


def print_outcome(args: argparse.Namespace, outcome: Outcome) -> bool:
    """The table for one backend; returns whether the run was sound (error rate in bounds)."""
    bsi, bare = outcome.bsi, outcome.bare
    title = "SQLite (embedded default)" if outcome.backend == "sqlite" else "PostgreSQL"
    load = f"open loop at {args.rate:,.0f} req/s" if args.rate else "closed loop"
    print()
    print(
        f"== {title}: {outcome.devices:,} devices, {args.workers} server worker(s), "
        f"{args.concurrency} connections, {load}, {args.seconds:g} s measured =="
    )
    rows: list[tuple[str, str, str]] = []

    def row(label: str, key: str, fmt: str = "ms") -> None:
        values = []
        for result in (bsi, bare):
            value = result["all"][key]
            values.append(f"{value:,.0f}" if fmt == "int" else _ms(value))
        rows.append((label, values[0], values[1]))

    row("requests/s", "rps", "int")
    row("p50 ms", "p50_ms")
    row("p90 ms", "p90_ms")
    row("p99 ms", "p99_ms")
    row("max ms", "max_ms")
    rows.append(("errors", f"{bsi['errors']:,}", f"{bare['errors']:,}"))
    for name, label in (("server", "server CPU % (100 = 1 core)"), ("loadgen", "loadgen CPU %")):
        rows.append(
            (
                label,
                f"{bsi['usage'][name]['cpu_percent']:.0f}",
                f"{bare['usage'][name]['cpu_percent']:.0f}",
            )
        )
    rows.append(
        (
            "server CPU ms per request",
            f"{_cpu_per_request(args, bsi):.3f}",
            f"{_cpu_per_request(args, bare):.3f}",
        )
    )
    rows.append(
        (
            "other processes CPU %",
            f"{_others(bsi):.0f}",
            f"{_others(bare):.0f}",
        )
    )
    rows.append(
        (
            "server RSS MB (max, all procs)",
            f"{bsi['usage']['server']['rss_mb_max']:.0f}",
            f"{bare['usage']['server']['rss_mb_max']:.0f}",
        )
    )
    if args.rate:
        rows.append(("dropped (never sent)", f"{bsi['dropped']:,}", f"{bare['dropped']:,}"))
    print(f"  {'':32}{'bsi mixed check-ins':>22}{'bare FastAPI /ping':>22}")
    for label, left, right in rows:
        print(f"  {label:32}{left:>22}{right:>22}")

    kinds = bsi["kinds"]
    total = max(bsi["all"]["count"], 1)
    tokens = kinds.get("tokens", {"count": 0, "statuses": {}, "p50_ms": math.nan})
    status = kinds.get("status", {"count": 0, "statuses": {}, "p50_ms": math.nan})
    not_modified = tokens["statuses"].get("304", 0)
    print(
        f"  unchanged check-ins (GET tokens): {tokens['count']:,} = "
        f"{100 * tokens['count'] / total:.1f} % of requests; served 304: "
        f"{100 * not_modified / max(tokens['count'], 1):.1f} %; "
        f"p50 {_ms(tokens['p50_ms'])} ms, p99 {_ms(tokens.get('p99_ms', math.nan))} ms"
    )
    print(
        f"  status reports (PUT status):      {status['count']:,} = "
        f"{100 * status['count'] / total:.1f} % of requests; "
        f"p50 {_ms(status['p50_ms'])} ms, p99 {_ms(status.get('p99_ms', math.nan))} ms"
    )
    print(f"  bsi requests completed in each second: {' '.join(map(str, bsi['per_second']))}")
    if "postgresql" in bsi["usage"]:
        print(f"  PostgreSQL CPU %: {bsi['usage']['postgresql']['cpu_percent']:.0f}")
    cores = bsi["usage"]["machine"]["cores"]
    print(
        f"  machine CPU % (of {100 * cores:.0f} on {cores:.0f} cores): bsi run "
        f"{bsi['usage']['machine']['cpu_percent']:.0f}, bare run "
        f"{bare['usage']['machine']['cpu_percent']:.0f}"
    )
    if max(_others(bsi), _others(bare)) > 25:
        print("  note: other processes used the CPU during this run; figures are noisy")
    facts = outcome.facts
    print(
        f"  afterwards in the database: {facts.get('devices_seen', 0):,} devices with last-seen "
        f"recorded, {facts.get('build_changes', 0):,} supplemental build changes, "
        f"{facts.get('decided', 0):,} devices with a decision"
    )
    ratio = bsi["all"]["rps"] / bare["all"]["rps"] if bare["all"]["rps"] else math.nan
    print(f"  ratio bsi / bare requests/s: {ratio:.2f}")
    rps, p99 = bsi["all"]["rps"], bsi["all"]["p99_ms"]
    met = rps >= TARGET_RPS and p99 < TARGET_P99_MS
    verdict = "MET" if met else "MISSED"
    if args.rate and args.rate < TARGET_RPS:
        verdict += f" (the offered {args.rate:,.0f} req/s is below the target rate)"
    print(
        f"  target >= {TARGET_RPS:,.0f} req/s with p99 < {TARGET_P99_MS:.0f} ms: {verdict} "
        f"({rps:,.0f} req/s, p99 {_ms(p99)} ms)"
    )
    if outcome.server_log:
        counts = Counter(outcome.server_log)
        print(f"  !!! the bsi server logged {len(outcome.server_log):,} problems:")
        for line, times in counts.most_common(5):
            print(f"  !!!   {times:,} x {line[:200]}")
    sound = True
    for name, result in (("bsi", bsi), ("bare FastAPI", bare)):
        if result["errors"] or result["warmup_errors"]:
            print(
                f"  !!! {name}: {result['errors']:,} ERRORS in the measured window "
                f"({100 * result['error_rate']:.2f} %): {result['errors_by_kind']}; "
                f"warm-up errors: {result['warmup_errors']}"
            )
            for sample_line in result["error_samples"]:
                print(f"  !!!   {sample_line}")
        if result["error_rate"] > MAX_ERROR_RATE:
            print(f"  !!! {name}: error rate over {100 * MAX_ERROR_RATE:.0f} %: run is not valid")
            sound = False
    return sound


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--database", choices=("sqlite", "postgresql", "both"), default="both", help="(both)"
    )
    parser.add_argument(
        "--devices",
        type=_device_counts,
        default=[10_000],
        help="enrolled devices (10000); several, comma-separated, print a growth table",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds (15)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections (64)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (1)")
    parser.add_argument("--port", type=int, default=0, help="server port (a free one)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop at this many req/s (closed loop)"
    )
    parser.add_argument(
        "--timeline",
        metavar="DIR",
        help="write every measured request of each run to DIR/<backend>-<bsi|bare>.tsv "
        "(--publish: DIR/<backend>-<before|after>-<quiet|publish>.tsv)",
    )
    parser.add_argument(
        "--unchanged-share",
        type=float,
        default=0.8,
        help="share of requests that are unchanged token check-ins (0.8)",
    )
    parser.add_argument(
        "--full-report-share",
        type=float,
        default=0.1,
        help="share of status reports that are full reports (0.1)",
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="measure a catalogue change under load (the decision pass it triggers) instead",
    )
    parser.add_argument(
        "--before-src",
        type=Path,
        metavar="DIR",
        help="with --publish: also run an earlier bsi's src/ (its every-device pass) first",
    )
    parser.add_argument(
        "--seed-cache",
        type=Path,
        metavar="DIR",
        help="SQLite: keep each seeded database in DIR and copy it in later runs with as "
        "many devices (seeding a million devices takes minutes)",
    )
    parser.add_argument("--seed-only", type=Path, metavar="DATA_DIR", help=argparse.SUPPRESS)
    parser.add_argument("--seed", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seed_only:  # seed_with's process: this bsi's seeding, for another bsi's server
        logging.getLogger("bsi.server").setLevel(logging.ERROR)
        key, group_id = seed_database(
            args.seed_only, args.database_url, args.devices[0], args.seed, fleet_templates()
        )
        print(json.dumps({"key": key.hex(), "group_id": group_id}))
        return
    if args.publish and not args.rate:
        parser.error("--publish measures p99 at a fixed load: give --rate")
    if min(args.devices) < 1 or args.concurrency < 1 or args.workers < 1 or args.seconds <= 0:
        parser.error("--devices, --concurrency, --workers and --seconds must be positive")
    if not 0.0 <= args.unchanged_share <= 1.0:
        parser.error("--unchanged-share must be between 0 (status reports only) and 1")

    logging.getLogger("bsi.server").setLevel(logging.ERROR)  # the seeding's "first admin key"
    backends = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    templates = fleet_templates()
    print(provenance(), flush=True)
    outcomes: list[Outcome] = []
    for backend, devices in ((b, d) for b in backends for d in args.devices):
        print(f"{backend}, {devices:,} devices:", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bsi-bench-{backend}-") as work:
            try:
                outcomes.append(measure_backend(args, backend, devices, templates, Path(work)))
            except (
                BenchmarkFailed,
                PostgresUnavailable,
                subprocess.SubprocessError,
                OSError,
            ) as error:
                detail = ""
                if isinstance(error, subprocess.CalledProcessError) and error.stderr:
                    detail = error.stderr.decode(errors="replace")[-2000:]
                outcomes.append(Outcome(backend, devices, failure=f"{error} {detail}".strip()))
                print(f"  !!! {backend}: the benchmark failed: {outcomes[-1].failure}")

    sound = all(outcome.failure is None for outcome in outcomes)
    for outcome in outcomes:
        show = print_publish if args.publish else print_outcome
        if outcome.failure is None and not show(args, outcome):
            sound = False
    if len(outcomes) > 1 and not args.publish:
        print()
        print(f"  {'summary':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}  target")
        for outcome in outcomes:
            if outcome.failure is not None:
                print(f"  {_label(outcome):22}  FAILED: {outcome.failure[:60]}")
                continue
            result = outcome.bsi["all"]
            met = result["rps"] >= TARGET_RPS and result["p99_ms"] < TARGET_P99_MS
            print(
                f"  {_label(outcome):22}{result['rps']:>10,.0f}{_ms(result['p50_ms']):>10}"
                f"{_ms(result['p99_ms']):>10}{outcome.bsi['errors']:>8,}  "
                f"{'met' if met else 'MISSED'}"
            )
    print_growth(args, outcomes)
    sys.exit(0 if sound else 1)


def _label(outcome: Outcome) -> str:
    return f"{outcome.backend} {outcome.devices:,}"


def _device_counts(text: str) -> list[int]:
    try:
        return [int(part.replace("_", "")) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a device count or a comma-separated list of them (10000,100000)"
        ) from None


if __name__ == "__main__":
    main()
