"""Numeric command-line arguments, bounded like every other input (see :mod:`bsi.strict`).

An option with only a lower bound lets ``inf`` or a 30-digit integer reach
code (a port, a sleep, a key count) that cannot hold it. Every numeric
option of ``bsi`` states both bounds (``min``/``max``, from here); typer
refuses a value outside them — and ``nan``, which no bound admits — with a
usage error (exit 2) naming the option and the bound.
"""

from __future__ import annotations

from bsi.errors import InvalidInput

MAX_PORT = 65535
"""TCP ports (RFC 793); 0 asks the system for any free one."""
MAX_WORKERS = 256
"""Server processes: each holds database connections, so more only exhaust them."""
MAX_SECONDS = 7 * 24 * 3600.0
"""Intervals and timeouts: a week; longer is a mistake, and event loops cannot hold inf."""
MAX_KEYS = 64
"""Keys or signatures per TUF role: far beyond any real threshold (TUF spec 4.3)."""


def whole_text(text: str, what: str, low: int, high: int) -> int:
    """``text`` as a whole number in ``low``..``high``, for values inside another argument
    (``--threshold root=2``). ASCII digits only: ``str.isdigit`` accepts ``²``, which
    ``int`` then refuses."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(high)):
        raise InvalidInput(
            f"{what}={text[:40]!r} is not a whole number", hint=f"between {low} and {high}"
        )
    value = int(text)
    if not low <= value <= high:
        raise InvalidInput(f"{what}={value} is out of range", hint=f"between {low} and {high}")
    return value
