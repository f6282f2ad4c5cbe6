"""A decision pass over many devices, run in a process of its own.

Why: a pass is Python from end to end (read the states, check them, decide, write),
and in the server's process it shares one interpreter with the event loop, so every
check-in waits for it. Measured at a million devices with a catalogue change
(``benchmarks/checkin.py --publish``, issue 18): unchanged check-in p99 1.1 ms
quiet, 4.5 ms during the pass in the server's thread, 1.4-1.8 ms with the pass
here. (At 10,000 devices, an outside process burning a core half the time, as a
pass does, had moved it from 1.1 to 1.8 ms, and to 1.3 ms at nice 19.) So a pass
over at least ``decision_process_devices`` devices (a server setting) runs here,
``python -m bsi.server.decision_process``, at a lower CPU priority
(:data:`NICENESS`); smaller passes stay in the server's thread, where starting a
process would cost more than it saves.

The child decides exactly as the server would (:meth:`BsiService.decide_here`, on
its own connection to the same database; each decision is a compare-and-set on the
device's status version, as in the server). It speaks JSON lines:

- the parent writes one request and closes the child's stdin:
  ``{"database_url": str, "cache_seconds": float, "now": ISO 8601, "affected": {...}}``
  (``now``: the server's instant the pass decides at);
- the child answers ``{"decided": N}`` after each batch (devices decided so far),
  then ``{"written": N, "stale": [device ids]}``, or
  ``{"error": str, "hint": str | null}`` and exits 1.

A child that ends without its last line (killed, out of memory) fails the pass with
:class:`DecisionPassFailed`; the server keeps the devices for its next pass. A child
whose parent is gone stops after its current batch: the pipe it answers on is broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import IO, Any

from bsi.domain.affected import Affected
from bsi.errors import BsiError, Unavailable
from bsi.server.service import BsiService
from bsi.store.database import open_engine, require_current_schema
from bsi.store.protocols import Stores
from bsi.store.store import Store

COMMAND = (sys.executable, "-m", "bsi.server.decision_process")
"""How the parent starts the child (the same interpreter and ``sys.path``)."""
NICENESS = 19
"""How much the child lowers its own CPU priority (``nice``): the server's event loop
and its check-ins go first when both want a core. On a machine with a core to spare
the pass runs as fast as in the server (54 s for a third of a million devices, as
before); on one the server saturates, it gets the CPU the server leaves. Measured at
a million devices (``checkin.py --publish``): during-pass p99 1.9-2.3 ms at nice 10,
1.4 ms at nice 19, against 1.0-1.2 ms quiet."""


class DecisionPassFailed(Unavailable):
    """A decision pass's process ended without deciding every device it was asked to
    (503: the next pass decides them)."""


def affected_to_json(affected: Affected) -> dict[str, Any]:
    return {
        "everyone": affected.everyone,
        "platforms": sorted(affected.platforms),
        "groups": sorted(affected.groups),
        "devices": sorted(affected.devices),
    }


def affected_from_json(document: dict[str, Any]) -> Affected:
    return Affected(
        everyone=bool(document["everyone"]),
        platforms=frozenset(str(p) for p in document["platforms"]),
        groups=frozenset(int(g) for g in document["groups"]),
        devices=frozenset(str(d) for d in document["devices"]),
    )


def decide_in_child(
    database_url: str,
    cache_seconds: float,
    affected: Affected,
    now: datetime,
    decided: Callable[[int], None],
) -> tuple[int, frozenset[str]]:
    """Run one pass for ``affected`` at ``now`` in a child process and wait for it; ``decided`` is
    told the child's count after each batch. Returns (decisions stored, devices still
    reporting). Raises :class:`DecisionPassFailed` when the child fails or ends early;
    the child is killed if this thread is interrupted."""
    request = {
        "database_url": database_url,
        "cache_seconds": cache_seconds,
        "now": now.isoformat(),
        "affected": affected_to_json(affected),
    }
    with subprocess.Popen(
        COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8"
    ) as child:
        try:
            outcome = _converse(child, request, decided)
        except BaseException:
            child.kill()
            raise
    if outcome is None:
        raise DecisionPassFailed(
            f"the decision pass's process ended early (exit status {child.returncode})",
            hint="the devices are decided by the next pass; the server's log has the reason",
        )
    return outcome


def _converse(
    child: subprocess.Popen[str], request: dict[str, Any], decided: Callable[[int], None]
) -> tuple[int, frozenset[str]] | None:
    """The parent's side of the protocol; None when the child ends without its answer."""
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        child.stdin.write(json.dumps(request) + "\n")
        child.stdin.close()
    except BrokenPipeError:
        return None  # it ended before it read the request
    for answer in _answers(child.stdout):
        if "decided" in answer:
            decided(int(answer["decided"]))
        elif "written" in answer:
            return int(answer["written"]), frozenset(map(str, answer["stale"]))
        else:
            raise DecisionPassFailed(
                f"the decision pass failed: {answer.get('error')}", hint=answer.get("hint")
            )
    return None


def _answers(lines: IO[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        try:
            answer = json.loads(line)
        except ValueError:
            continue  # not the protocol's: a stray print
        if isinstance(answer, dict):
            yield answer


def main() -> int:
    """The child: one pass as its parent asked, answered on stdout."""
    os.nice(NICENESS)
    out = sys.stdout

    def say(answer: dict[str, Any]) -> None:
        out.write(json.dumps(answer) + "\n")
        out.flush()

    def decided(count: int) -> None:
        say({"decided": count})

    try:
        request = json.loads(sys.stdin.readline())
        now = datetime.fromisoformat(str(request["now"]))
        service = _service(str(request["database_url"]), float(request["cache_seconds"]), now)
        written, stale = service.decide_here(affected_from_json(request["affected"]), decided)
        say({"written": written, "stale": sorted(stale)})
    except BsiError as error:
        say({"error": error.message, "hint": error.hint})
        return 1
    except BrokenPipeError:  # its parent is gone: nobody waits for this pass any more
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # nor for the exit's flush
        return 1
    return 0


def _service(database_url: str, cache_seconds: float, now: datetime) -> BsiService:
    """A service on the server's database, for deciding only (no migration, no keys),
    whose clock stands at the server's ``now``."""
    engine = open_engine(database_url, pool_size=2)
    require_current_schema(engine)
    return BsiService(
        Stores.sharing(Store(engine)),
        lambda: now,
        cache_seconds=cache_seconds,
        identity_seconds=cache_seconds,
        status_burst=1,
        status_per_second=1,
    )


if __name__ == "__main__":
    sys.exit(main())
