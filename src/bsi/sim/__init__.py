"""The fleet simulator behind ``bsi sim``, ``bsi demo`` and ``benchmarks/patch_window.py``.

Simulated devices run the agent's own code against the real server on
loopback, so that a roll-out can be watched and measured end to end on one
machine: ``full`` devices are the agent itself on a small device root,
``light`` devices run its check-in cycle with a record-only activator
(see :mod:`bsi.sim.devices` and :mod:`bsi.sim.recorded`).

Modules: ``fleet`` (kinds of device and their roots), ``sample`` (the demo's
real, signed supplement), ``http`` and ``protocol`` (the async transport of the
agent's conversation), ``recorded`` (the agent with a record-only activator),
``devices``, ``engine`` (one run: enroll, baseline, publish,
roll-out, measure), ``server`` (``bsi serve`` in a child process and the admin
API), ``local`` (a whole run in a data directory) and ``report`` (what is
printed).
"""
