"""Rollout safety: how far a bad supplement gets before its rollout halts, and what waves cost.

A discrete-event model of a fleet under bsi's own rollout rules
(:mod:`bsi.domain.rollout`, the code the server runs): ``--devices`` devices
(10,000 by default) each check in every ``--poll-minutes`` (± 10 %, the first
check-in uniform over one interval), as polling agents do. At a check-in a
device whose wave is open (:func:`~bsi.domain.rollout.gate`) installs; the
install takes ``--install-minutes``, after which the device reports the
supplement active or, for a bad supplement, a failed health check on
``--fail-fraction`` of the devices (which ones: a draw of their id). The
server steps the rollout every ``--tick-seconds`` from the waves' health
(:func:`~bsi.domain.rollout.wave_health`, :func:`~bsi.domain.rollout.step`),
as ``bsi serve`` does every ``rollout_tick_seconds``, and as each failure is
stored (``Rollouts.react``).

It prints, for the plan 1 % -> 10 % -> 50 % -> 100 % (``--soak-hours`` each,
halt on the first failure):

* bad supplement: the **blast radius** (devices that activated it before the
  halt, counting those whose install was in flight at the halt) against the
  first wave's size plus the devices in flight; the check
  ``blast radius <= first wave + in flight`` is the issue's bar;
* good supplement: the time from publishing to 99 % of the fleet running it,
  with the waves and with ``all_now`` (no waves).

This is a model of timing (no network, no server process): it measures the
policy, not the transport. ``benchmarks/patch_window.py`` measures the real
server and the simulated agents.

    .venv/bin/python benchmarks/rollout_safety.py
    .venv/bin/python benchmarks/rollout_safety.py --devices 10000 --fail-fraction 0.2
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bsi.domain.rollout import (
    ALL_NOW,
    DeviceProgress,
    FailureKind,
    HaltRule,
    Rollout,
    RolloutPlan,
    RolloutState,
    Wave,
    assign_waves,
    draw,
    gate,
    start,
    step,
    wave_health,
)

T0 = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
BUILD = "12A100b"


def plan(soak_hours: float) -> RolloutPlan:
    soak = timedelta(hours=soak_hours)
    return RolloutPlan(
        waves=(
            Wave("1%", 1, soak=soak),
            Wave("10%", 10, soak=soak),
            Wave("50%", 50, soak=soak),
            Wave("100%", 100, soak=timedelta(0)),
        ),
        halt=HaltRule(max_failures=1),
    )


@dataclass
class Outcome:
    devices: int
    wave_sizes: list[int]
    halted_at: float | None = None
    halted_because: str | None = None
    activated_before_halt: int = 0
    in_flight_at_halt: int = 0
    minutes_to_99: float | None = None
    installed: int = 0
    failed: int = 0
    failing_in_first_wave: int = 0

    @property
    def first_wave(self) -> int:
        return self.wave_sizes[0]


@dataclass(order=True)
class _Event:
    at: float  # minutes since publishing
    order: int
    kind: str = field(compare=False)
    device: str = field(compare=False)


def run(
    rollout_plan: RolloutPlan,
    *,
    devices: int,
    poll_minutes: float,
    install_minutes: float,
    tick_seconds: float,
    fail_fraction: float,
    horizon_hours: float,
    seed: int,
) -> Outcome:
    rng = random.Random(seed)
    ids = [f"dev-{i:05d}" for i in range(devices)]
    members = assign_waves(rollout_plan, BUILD, dict.fromkeys(ids, "default"))
    sizes = [sum(1 for w in members.values() if w == i) for i in range(len(rollout_plan.waves))]
    outcome = Outcome(devices, sizes)
    fails = {d for d in ids if draw("health-check", d) < fail_fraction}
    outcome.failing_in_first_wave = sum(1 for d in fails if members[d] == 0)
    rollout: Rollout = start(rollout_plan, BUILD, T0)
    started: dict[str, float] = {}  # device -> minute its install began (it activates)
    done: dict[str, float] = {}  # device -> minute it reported the result
    queue: list[_Event] = []
    order = 0

    def push(at: float, kind: str, device: str) -> None:
        nonlocal order
        order += 1
        heapq.heappush(queue, _Event(at, order, kind, device))

    for d in ids:
        push(rng.uniform(0, poll_minutes), "check-in", d)
    tick = tick_seconds / 60
    push(tick, "tick", "")
    horizon = horizon_hours * 60

    def look(at: float) -> None:
        """The server steps the rollout: at every tick, and as a failure is stored."""
        nonlocal rollout
        if rollout.state is not RolloutState.RUNNING:
            return
        now = T0 + timedelta(minutes=at)
        progress = [
            DeviceProgress(
                d,
                installed_at=None
                if d not in done or d in fails
                else T0 + timedelta(minutes=done[d]),
                last_report_at=now,
                failure=FailureKind.HEALTH_CHECK_ROLLBACK if d in done and d in fails else None,
                wave=members[d],
            )
            for d in ids
        ]
        health = wave_health(progress, timedelta(hours=6), now, rollout.current)
        rollout, _ = step(rollout, health, now)
        if rollout.state is RolloutState.HALTED:
            outcome.halted_at = at
            outcome.halted_because = rollout.halted_because
            outcome.activated_before_halt = len(started)
            outcome.in_flight_at_halt = sum(1 for d in started if d not in done)

    while queue:
        event = heapq.heappop(queue)
        if event.at > horizon:
            break
        if event.kind == "check-in":
            d = event.device
            if d not in started and gate(rollout, members[d]).open:
                started[d] = event.at
                push(event.at + install_minutes, "reported", d)
            elif d not in started:
                push(event.at + poll_minutes * rng.uniform(0.9, 1.1), "check-in", d)
        elif event.kind == "reported":
            done[event.device] = event.at
            if event.device in fails:
                look(event.at)  # a failure is judged as it is stored (Rollouts.react)
            else:
                outcome.installed += 1
                if outcome.minutes_to_99 is None and outcome.installed >= 0.99 * devices:
                    outcome.minutes_to_99 = event.at
        else:
            look(event.at)
            if rollout.state is RolloutState.RUNNING or outcome.minutes_to_99 is None:
                push(event.at + tick, "tick", "")
        if rollout.state is RolloutState.HALTED:
            break
        if outcome.minutes_to_99 is not None and rollout.state is not RolloutState.RUNNING:
            break
    outcome.failed = sum(1 for d in done if d in fails)
    if outcome.halted_at is None:
        outcome.activated_before_halt = len(started)
    return outcome


def halting_wave(outcome: Outcome) -> int | None:
    """The index of the wave the rollout halted in (the devices activated tell it)."""
    if outcome.halted_at is None:
        return None
    reached, total = outcome.activated_before_halt - outcome.in_flight_at_halt, 0
    for i, size in enumerate(outcome.wave_sizes):
        total += size
        if reached <= total:
            return i
    return len(outcome.wave_sizes) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--poll-minutes", type=float, default=15.0)
    parser.add_argument("--install-minutes", type=float, default=2.0)
    parser.add_argument("--tick-seconds", type=float, default=30.0)
    parser.add_argument("--soak-hours", type=float, default=1.0)
    parser.add_argument(
        "--fail-fractions",
        default="0.01,0.05,0.2",
        help="comma-separated fractions of devices whose health check fails",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    common: dict[str, Any] = {
        "devices": args.devices,
        "poll_minutes": args.poll_minutes,
        "install_minutes": args.install_minutes,
        "tick_seconds": args.tick_seconds,
        "seed": args.seed,
        "horizon_hours": 48,
    }
    waves = plan(args.soak_hours)
    print(
        f"{args.devices} devices, poll every {args.poll_minutes:g} min, install "
        f"{args.install_minutes:g} min, server step every {args.tick_seconds:g} s"
    )
    print(f"plan 1% -> 10% -> 50% -> 100%, soak {args.soak_hours:g} h, halt on 1 failure")
    figures: dict[str, Any] = {"devices": args.devices, "bad": []}
    ok = True
    for fraction in (float(f) for f in args.fail_fractions.split(",")):
        bad = run(waves, fail_fraction=fraction, **common)
        figures["wave_sizes"] = bad.wave_sizes
        bound = bad.first_wave + bad.in_flight_at_halt
        within = bad.halted_at is not None and bad.activated_before_halt <= bound
        ok &= within
        where = halting_wave(bad)
        print(
            f"bad supplement, health check fails on {fraction:.0%}: "
            + (
                "NOT HALTED within 48 h"
                if bad.halted_at is None
                else f"halted after {bad.halted_at:.1f} min in wave {where} ({bad.halted_because})"
            )
        )
        print(
            f"  blast radius {bad.activated_before_halt} (in flight at the halt "
            f"{bad.in_flight_at_halt}); first wave {bad.first_wave} + in flight = {bound}: "
            + ("within" if within else "EXCEEDED")
            + f"; devices the supplement breaks in the first wave: {bad.failing_in_first_wave}"
            + (
                " (none: no rule can halt a wave that holds no failing device; the chance "
                f"is (1 - {fraction:g})^{bad.first_wave} = "
                f"{(1 - fraction) ** bad.first_wave:.0%})"
                if not bad.failing_in_first_wave
                else ""
            )
        )
        figures["bad"].append(
            {
                "fail_fraction": fraction,
                "halted_after_minutes": bad.halted_at,
                "halted_in_wave": where,
                "blast_radius": bad.activated_before_halt,
                "in_flight_at_halt": bad.in_flight_at_halt,
                "first_wave_plus_in_flight": bound,
                "failing_in_first_wave": bad.failing_in_first_wave,
            }
        )
    print(f"wave sizes: {figures['wave_sizes']}")
    good = run(waves, fail_fraction=0.0, **common)
    flat = run(ALL_NOW, fail_fraction=0.0, **common)
    print("good supplement, time from publishing to 99 % of the fleet:")
    for name, result in (("waves", good), ("all now", flat)):
        shown = "not reached" if result.minutes_to_99 is None else f"{result.minutes_to_99:.1f} min"
        print(f"  {name:8} {shown}")
    figures["minutes_to_99_waves"] = good.minutes_to_99
    figures["minutes_to_99_all_now"] = flat.minutes_to_99
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
