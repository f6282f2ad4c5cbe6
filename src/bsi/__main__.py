"""``python -m bsi``: the same as the ``bsi`` command."""

from bsi.cli import main

main()
