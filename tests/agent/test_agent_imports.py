"""What ``bsi agent`` loads at start-up on a host that uses no containers."""

from __future__ import annotations

import subprocess
import sys


def printed_by(code: str) -> list[str]:
    """The lines a fresh interpreter prints running ``code`` (it must exit 0)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.splitlines()


def test_the_docker_sdk_is_loaded_only_by_the_container_activator() -> None:
    code = (
        "import sys, bsi.cli, bsi.agent.runner\n"
        "from bsi.agent.activators import StateLayout, make_activator\n"
        "from pathlib import Path\n"
        "make_activator('swap', StateLayout.for_root(Path('/nonexistent')))\n"
        "print('docker' in sys.modules)\n"
        "make_activator('container', StateLayout.for_root(Path('/nonexistent')),\n"
        "               container_engine='unix:///nonexistent.sock')\n"
        "print('docker' in sys.modules)\n"
    )
    assert printed_by(code) == ["False", "True"]


def test_bsi_agent_loads_no_other_command() -> None:
    """``bsi agent`` starts at every boot and timer on a device: the CLI loads only the
    command asked for, not the admin client's, the publisher's, the Apple fleet's, the
    simulator's or the server's (with their libraries)."""
    code = (
        "import atexit, sys\n"
        "others = ('bsi.commands.admin', 'bsi.commands.supplements', 'bsi.commands.apple',\n"
        "          'bsi.commands.demo', 'bsi.commands.server', 'fastapi', 'sqlalchemy')\n"
        "atexit.register(lambda: print(sorted(m for m in ('bsi.commands.agent', *others)\n"
        "                                     if m in sys.modules)))\n"
        "sys.argv = ['bsi', 'agent', 'status', '--help']\n"
        "from bsi.cli import main\n"
        "main()\n"
    )
    assert printed_by(code)[-1] == "['bsi.commands.agent']"
