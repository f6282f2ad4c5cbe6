"""A small HTTP/1.1 load generator for ``benchmarks/checkin.py``, run as its own process.

httpx spends far more CPU per request than a server does, so this drives the
server over raw ``asyncio`` streams instead: one keep-alive connection per
worker, requests written as prepared bytes, responses parsed just enough
(status line, ``Content-Length`` or chunked body, ``ETag``, ``Connection``).
It runs on uvloop when that is installed.

Two modes:

``ping``
    ``GET /ping`` on a bare FastAPI app; anything but 200 is an error.
``checkin``
    A fleet of devices (credentials derived from a seed, see :func:`credential`)
    checking in: each request picks a random device and sends either
    ``GET /v1/ddm/tokens`` with the ``If-None-Match`` token it holds (an
    unchanged check-in: 304 expected) or, for the rest, ``PUT /v1/ddm/status``
    with a realistic report from the plan file (200 expected).

Load is closed-loop by default (every connection sends its next request as
soon as the last one is answered); ``--rate`` makes it open-loop at a fixed
number of requests per second spread over the connections, with latency
counted from when each request was due, so a server that falls behind is
charged for the queue it causes.

A warm-up runs first and is not measured. The process prints ``MEASURING``
when the measured window starts, ``DONE`` when it ends, then one line of
JSON with the results. It never runs longer than warm-up + duration + the
request timeout, and it only connects to the host it is given.

    .venv/bin/python benchmarks/loadgen.py --port 8080 --mode ping --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import math
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsi.server.credentials import issue

REQUEST_TIMEOUT = 10.0
"""Seconds one request may take before it counts as an error and its connection is dropped."""


def credential(key: bytes, group_id: int, seed: str, index: int) -> str:
    """Device ``index``'s bearer credential, signed as the server signs them at enrollment."""
    return issue(key, device_id(seed, index), group_id)


def device_id(seed: str, index: int) -> str:
    """Device ``index``'s id: 32 hex digits, as ``Store.enroll`` issues."""
    return hashlib.sha256(f"bsi-bench-device:{seed}:{index}".encode()).hexdigest()[:32]


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as this client understands it."""


@dataclass(slots=True)
class Response:
    status: int
    etag: bytes | None
    body: bytes


class Connection:
    """One HTTP/1.1 keep-alive connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.open = True

    @classmethod
    async def connect(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> Response:
        self.writer.write(request)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 ") or len(head) < 12:
            raise ProtocolError(f"bad status line {head[:40]!r}")
        status = int(head[9:12])
        length: int | None = None
        chunked = close = False
        etag: bytes | None = None
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
            elif name == b"etag":
                etag = value.strip()
        if status in (204, 304) or status < 200:
            body = b""
        elif chunked:
            body = await self._chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:  # no length: the body runs to the end of the connection
            body = await self.reader.read()
            close = True
        if close:
            self.close()
        return Response(status, etag, body)

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.writer.close()


@dataclass(slots=True)
class Kind:
    """Results for one kind of request (``ping``, ``tokens``, ``status``)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Results:
    expected: dict[str, frozenset[int]]
    measure_from: float = math.inf
    measure_until: float = math.inf
    kinds: dict[str, Kind] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    per_second: Counter[int] = field(default_factory=Counter)
    """Measured requests completed in each second of the window."""
    timeline: list[tuple[float, float, str, str]] | None = None
    """(start, latency, kind, outcome) of every measured request, when asked for."""

    def record(self, kind: str, started: float, ended: float, outcome: str, detail: str) -> None:
        ok = outcome.isdigit() and int(outcome) in self.expected[kind]
        if not (self.measure_from <= started and ended <= self.measure_until):
            if not ok and started < self.measure_from:
                self.warmup_errors[f"{kind} {outcome}"] += 1
            return
        entry = self.kinds.setdefault(kind, Kind())
        entry.latencies.append(ended - started)
        entry.statuses[outcome] += 1
        self.per_second[int(ended - self.measure_from)] += 1
        if self.timeline is not None:
            self.timeline.append((started - self.measure_from, ended - started, kind, outcome))
        if not ok:
            self.errors[f"{kind} {outcome}"] += 1
            if len(self.error_samples) < 10:
                self.error_samples.append(f"{kind} {outcome}: {detail[:300]}")


class Traffic:
    """What to send next: the bare ping, or a random device's check-in."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.host_header = f"Host: {args.host}:{args.port}\r\n".encode()
        self.rng = random.Random(args.random_seed)
        self.ping = b"GET /ping HTTP/1.1\r\n" + self.host_header + b"\r\n"
        self.devices = 0
        self.unchanged = 1.0
        self.etags: dict[int, bytes] = {}
        self.initial_etag = b""
        self.templates: list[list[bytes]] = []
        self.full_share = 0.0
        self.fulls: list[list[bytes]] = []
        if args.mode == "checkin":
            plan = json.loads(Path(args.plan).read_text(encoding="utf-8"))
            self.seed = str(plan["seed"])
            self.devices = int(plan["devices"])
            self.unchanged = float(plan["unchanged_share"])
            self.full_share = float(plan["full_report_share"])
            self.initial_etag = str(plan["initial_etag"]).encode()
            self.templates = [
                [json.dumps(body).encode() for body in t["partials"]] for t in plan["templates"]
            ]
            self.fulls = [
                [json.dumps(body).encode() for body in t["fulls"]] for t in plan["templates"]
            ]
            key, group_id = bytes.fromhex(plan["credential_key"]), int(plan["group_id"])
            self.auth = [
                f"Authorization: Bearer {credential(key, group_id, self.seed, i)}\r\n".encode()
                for i in range(self.devices)
            ]

    def next(self, mode: str) -> tuple[str, int, bytes]:
        """(kind, device index or -1, request bytes)."""
        if mode == "ping":
            return "ping", -1, self.ping
        rng = self.rng
        device = rng.randrange(self.devices)
        if rng.random() < self.unchanged:
            etag = self.etags.get(device, self.initial_etag)
            request = (
                b"GET /v1/ddm/tokens HTTP/1.1\r\n"
                + self.host_header
                + self.auth[device]
                + (b"If-None-Match: " + etag + b"\r\n" if etag else b"")
                + b"\r\n"
            )
            return "tokens", device, request
        template = device % len(self.templates)
        choices = self.fulls if rng.random() < self.full_share else self.templates
        body = rng.choice(choices[template])
        request = (
            b"PUT /v1/ddm/status HTTP/1.1\r\n"
            + self.host_header
            + self.auth[device]
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        return "status", device, request

    def remember(self, device: int, response: Response) -> None:
        if device >= 0 and response.status == 200 and response.etag:
            self.etags[device] = response.etag


async def worker(
    args: argparse.Namespace,
    traffic: Traffic,
    results: Results,
    stop_at: float,
    due: asyncio.Queue[float | None] | None,
) -> None:
    connection: Connection | None = None
    try:
        while True:
            scheduled: float | None = None
            if due is not None:
                scheduled = await due.get()
                if scheduled is None:
                    return
            if time.perf_counter() >= stop_at:
                return
            kind, device, request = traffic.next(args.mode)
            started = time.perf_counter() if scheduled is None else scheduled
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    if connection is None or not connection.open:
                        connection = await Connection.connect(args.host, args.port)
                    response = await connection.exchange(request)
            except (OSError, EOFError, TimeoutError, ProtocolError, ValueError) as error:
                ended = time.perf_counter()
                if connection is not None:
                    connection.close()
                connection = None
                name = type(error).__name__
                results.record(kind, started, ended, name, str(error))
                await asyncio.sleep(0.05)  # do not spin on a server that refuses connections
                continue
            ended = time.perf_counter()
            traffic.remember(device, response)
            results.record(
                kind, started, ended, str(response.status), response.body.decode(errors="replace")
            )
    finally:
        if connection is not None:
            connection.close()


async def schedule(
    rate: float, start: float, stop_at: float, due: asyncio.Queue[float | None], workers: int
) -> int:
    """Put each request's due time on ``due`` at ``rate`` per second, then one stop per worker.

    Returns how many due requests no connection had taken when time was up.
    """
    sent = dropped = 0
    while True:
        now = time.perf_counter()
        if now >= stop_at:
            break
        while start + sent / rate <= now:
            due.put_nowait(start + sent / rate)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    while not due.empty():  # requests never started: reported as dropped
        due.get_nowait()
        dropped += 1
    for _ in range(workers):
        due.put_nowait(None)
    return dropped


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list, in milliseconds."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "count": len(ordered),
        "rps": len(ordered) / seconds,
        "p50_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] * 1000 if ordered else math.nan,
        "mean_ms": sum(ordered) / len(ordered) * 1000 if ordered else math.nan,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    traffic = Traffic(args)
    expected = {
        "ping": frozenset({200}),
        "tokens": frozenset({200, 304}),
        "status": frozenset({200}),
    }
    results = Results(expected, timeline=[] if args.timeline else None)
    start = time.perf_counter()
    results.measure_from = start + args.warmup
    results.measure_until = stop_at = results.measure_from + args.seconds
    due: asyncio.Queue[float | None] | None = None
    scheduler: asyncio.Task[int] | None = None
    if args.rate:
        due = asyncio.Queue()
        scheduler = asyncio.create_task(schedule(args.rate, start, stop_at, due, args.concurrency))
    tasks: list[asyncio.Task[Any]] = [
        asyncio.create_task(worker(args, traffic, results, stop_at, due))
        for _ in range(args.concurrency)
    ]
    await asyncio.sleep(max(0.0, results.measure_from - time.perf_counter()))
    cpu_from = cpu_seconds()
    print("MEASURING", flush=True)
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    cpu_used = cpu_seconds() - cpu_from
    print("DONE", flush=True)
    if scheduler is not None:
        tasks.append(scheduler)
    done, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
    for task in pending:
        task.cancel()
    for task in done:
        error = task.exception()
        if error is not None:
            raise error

    if results.timeline is not None:
        with Path(args.timeline).open("w", encoding="utf-8") as out:
            out.write("start_s\tlatency_ms\tkind\toutcome\n")
            for started, latency, kind, outcome in sorted(results.timeline):
                out.write(f"{started:.4f}\t{latency * 1000:.2f}\t{kind}\t{outcome}\n")

    every = [latency for kind in results.kinds.values() for latency in kind.latencies]
    completed = len(every)
    errors = sum(results.errors.values())
    report: dict[str, Any] = {
        "mode": args.mode,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "seconds": args.seconds,
        "all": summary(every, args.seconds),
        "kinds": {
            name: {**summary(kind.latencies, args.seconds), "statuses": dict(kind.statuses)}
            for name, kind in sorted(results.kinds.items())
        },
        "per_second": [results.per_second[i] for i in range(math.ceil(args.seconds))],
        "errors": errors,
        "error_rate": errors / completed if completed else 1.0,
        "errors_by_kind": dict(results.errors),
        "warmup_errors": dict(results.warmup_errors),
        "error_samples": results.error_samples,
        "loadgen_cpu_percent": 100 * cpu_used / args.seconds,
        "dropped": scheduler.result() if scheduler is not None and scheduler.done() else 0,
        "devices": traffic.devices,
        "devices_with_new_etag": len(traffic.etags),
    }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("ping", "checkin"), required=True)
    parser.add_argument("--plan", help="the check-in plan (JSON) that benchmarks/checkin.py wrote")
    parser.add_argument("--concurrency", type=int, default=64, help="connections (64)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds (15)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop at this many req/s")
    parser.add_argument("--random-seed", type=int, default=1)
    parser.add_argument(
        "--timeline", help="write every measured request (start, latency, kind, status) here, TSV"
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("this load generator only targets loopback")
    if args.mode == "checkin" and not args.plan:
        parser.error("--mode checkin needs --plan")
    # A pause of this process's own (a full garbage collection walks every request it
    # has timed: 50-85 ms at 100,000 requests) would be counted as the server's
    # latency. Its reference cycles are few and it ends with the run.
    gc.disable()
    try:
        import uvloop
    except ImportError:
        report = asyncio.run(run(args))
    else:
        report = uvloop.run(run(args))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
