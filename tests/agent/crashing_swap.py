"""Test builds only: ``python -m bsi.agent.activators.swap`` with the journal's crash hook.

    python tests/agent/crashing_swap.py --crash-at POINT {stage,activate,...} --root ...

``POINT`` is a :class:`~bsi.agent.journal.CrashPoint` (``after:3``,
``before:2``, ``torn:5``, or ``3``); every other argument goes to the swap
activator's own entry. The crash tests kill a real activation through this
file; the installed ``bsi`` and ``python -m bsi.agent.activators.swap`` have
no way to enable the hook.
"""

from __future__ import annotations

import sys

from bsi.agent.activators.swap import main
from bsi.agent.journal import CrashHook, CrashPoint

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--crash-at":
        sys.exit(f"usage: {sys.argv[0]} --crash-at POINT COMMAND [ARGS...]")
    sys.exit(main(sys.argv[3:], crash=CrashHook(CrashPoint.parse(sys.argv[2]))))
