"""The agent's systemd unit, written for the bsi that is installed here.

The template (``bsi/data/bsi-agent.service``) names the program as ``@BSI@``;
:func:`render_unit` puts this Python interpreter and ``-m bsi`` in its place,
so the unit runs exactly the bsi that wrote it, wherever it was installed (a
virtualenv, ``pipx``, a distribution package). Its hardening lines that give
the agent a private mount namespace (between ``# @MOUNT-NAMESPACE@`` and
``# @END@``) are left out for the overlay activator, whose mounts must be
the host's (systemd.exec(5): ``PrivateTmp=``, ``ProtectHome=``, ... imply a
new mount namespace).
"""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from pathlib import PurePosixPath

UNIT_PATH = PurePosixPath("etc/systemd/system/bsi-agent.service")
"""Where ``bsi agent install-unit`` writes the unit, below the device root."""

_TEMPLATE = "bsi-agent.service"
_NAMESPACE_START = "# @MOUNT-NAMESPACE@"
_NAMESPACE_END = "# @END@"


def program() -> str:
    """The command line that runs this bsi: its interpreter and ``-m bsi``, quoted."""
    return f"{shlex.quote(sys.executable)} -m bsi"


def render_unit(activator: str, *, command: str | None = None) -> str:
    """The unit text for ``activator`` (``swap`` or ``overlay``), running ``command``."""
    text = (resources.files("bsi") / "data" / _TEMPLATE).read_text(encoding="utf-8")
    lines = []
    skipping = False
    for line in text.splitlines():
        if line.startswith(_NAMESPACE_START):
            skipping = activator == "overlay"
            continue
        if line.startswith(_NAMESPACE_END):
            skipping = False
            continue
        if not skipping:
            lines.append(line)
    return "\n".join(lines).replace("@BSI@", command or program()) + "\n"
