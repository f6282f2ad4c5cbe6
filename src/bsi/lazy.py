"""Package attributes imported on first use (PEP 562), for packages whose modules
serve different programs: ``bsi agent`` reads bundles and catalogues, and must not
load the bundle builder or every feed parser on each start because their package
``__init__`` names them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps each name to the module
    (relative to ``package``, e.g. ``"build"``) that defines it; anything else raises
    :class:`AttributeError`, as a missing attribute does."""

    def load(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return load
