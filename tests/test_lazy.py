"""Packages whose attributes are imported on first use (bsi.lazy): every name they export
resolves to its module's object, and a name they do not export is an AttributeError."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["bsi.cryptex", "bsi.feeds"])
def test_every_exported_name_is_its_modules_object(package: str) -> None:
    module = importlib.import_module(package)
    submodules = [
        importlib.import_module(f"{package}.{info.name}")
        for info in pkgutil.iter_modules(module.__path__)
    ]
    for name in module.__all__:
        value = getattr(module, name)
        assert any(vars(sub).get(name) is value for sub in submodules), name
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'nothing'"):
        module.nothing  # noqa: B018


def test_importing_one_module_of_a_package_loads_no_other() -> None:
    code = (
        "import sys, bsi.cryptex.errors, bsi.feeds.bsi_catalog\n"
        "print(sorted(m for m in sys.modules if m.startswith(('bsi.cryptex.', 'bsi.feeds.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = eval(done.stdout)  # a list of module names
    assert "bsi.cryptex.build" not in loaded
    assert not {"bsi.feeds.gdmf", "bsi.feeds.sofa", "bsi.feeds.load"} & set(loaded)
