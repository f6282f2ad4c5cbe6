"""When a device checks in: interval, jitter, backoff and the wake-up long poll.

Pure: randomness (a draw in ``[0, 1)``, as ``random.random()`` gives) and
time (monotonic seconds) are passed in, so the daemon (``bsi agent run``)
and the fleet simulator follow one rule and tests need no clock.

The rule:

* after a check-in that reached the server, the next is due one
  ``interval`` later, spread by ± ``jitter`` (a fraction of the interval) so
  that a fleet started together does not check in together;
* after one that could not reach it (:class:`~bsi.errors.ServerUnavailable`),
  retry after ``first_backoff`` seconds, doubling each time, never more
  than the interval; the wake-up generation is forgotten (the server may
  have restarted);
* between check-ins the device holds the server's wake-up long poll
  (``GET /v1/ddm/wait``, see ``bsi.server.wakeup``), at most
  :data:`MAX_LONG_POLL` seconds at a time, until the check-in is due or the
  server says to check in now; if the long poll itself fails, the device
  sleeps until the check-in is due.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LONG_POLL = 300.0
"""Seconds: the server's limit for ``GET /v1/ddm/wait?timeout=``."""
FIRST_BACKOFF = 5.0
"""Seconds before the first retry after the server could not be reached."""


@dataclass(frozen=True, slots=True)
class Cadence:
    """What a device carries from one check-in to the next.

    ``backoff``: seconds before the next retry if the next check-in fails;
    ``generation``: the last wake-up generation the server gave (0: none).
    """

    backoff: float = FIRST_BACKOFF
    generation: int = 0


@dataclass(frozen=True, slots=True)
class Schedule:
    """A device's check-in schedule. Seconds; ``jitter`` is a fraction of ``interval``."""

    interval: float = 900.0
    jitter: float = 0.1
    first_backoff: float = FIRST_BACKOFF
    long_poll_limit: float = MAX_LONG_POLL

    def start(self) -> Cadence:
        return Cadence(self.first_backoff)

    def after_check_in(
        self, cadence: Cadence, *, reached: bool, draw: float
    ) -> tuple[float, Cadence]:
        """Seconds until the next check-in, and the cadence to carry; ``draw`` in [0, 1)."""
        if reached:
            spread = self.jitter * (2 * draw - 1)
            return self.interval * (1 + spread), Cadence(self.first_backoff, cadence.generation)
        wait = min(cadence.backoff, self.interval)
        return wait, Cadence(min(cadence.backoff * 2, self.interval), 0)

    def first_check_in(self, draw: float) -> float:
        """Seconds until a device's first poll when devices started at random instants."""
        return self.interval * draw

    def wait(self, seconds: float, generation: int, now: float) -> Wait:
        """The wait until the next check-in, ``seconds`` from monotonic instant ``now``."""
        return Wait(now + seconds, generation, self.long_poll_limit)


@dataclass(slots=True)
class Wait:
    """Between two check-ins: when to hold the long poll, and when the wait is over.

    ``deadline`` is a monotonic instant (seconds); ``generation`` the
    wake-up generation to send with the next long poll.
    """

    deadline: float
    generation: int
    limit: float = MAX_LONG_POLL
    over: bool = False

    def next_poll(self, now: float) -> float | None:
        """Seconds to hold the next long poll, or ``None`` when the check-in is due."""
        left = self.deadline - now
        if self.over or left <= 0:
            return None
        return min(left, self.limit)

    def answered(self, generation: int, check_in: bool) -> None:
        """The long poll answered: remember the generation; check in now if told to."""
        self.generation = generation
        self.over = self.over or check_in

    def failed(self, now: float) -> float:
        """The long poll got no answer: seconds to sleep until the check-in is due."""
        self.over = True
        return max(self.deadline - now, 0.0)
