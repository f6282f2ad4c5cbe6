"""A second, independent reading of Apple's DDM declaration schemas, for tests only.

It interprets Apple's YAML files directly (``type``, ``presence``,
``rangelist``, ``range``, ``subkeys``, array items) and shares no code with
bsi's hand-written table, so that "bsi's output validates against Apple's
schema" is checked against Apple and not against bsi itself.

The YAML lives in ``../shared/data``; without it the tests skip, except under
``CI=true``, where they fail (the same rule as ``tests/conftest.py``).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from realdata import shared_data_path

DECLARATIONS = ("apple-device-management", "declarative", "declarations")

FILES = {
    "com.apple.configuration.softwareupdate.settings": (
        "configurations/softwareupdate.settings.yaml"
    ),
    "com.apple.configuration.softwareupdate.enforcement.specific": (
        "configurations/softwareupdate.enforcement.specific.yaml"
    ),
    "com.apple.activation.simple": "activations/simple.yaml",
    "com.apple.configuration.management.status-subscriptions": (
        "configurations/management.status-subscriptions.yaml"
    ),
}
BASE = "declarationbase.yaml"

# Attributes of a key whose meaning this reader knows; anything else is a new
# rule Apple added, and the conformance tests must learn about it first.
SEMANTIC = {"key", "type", "presence", "default", "rangelist", "range", "combinetype", "subkeys"}
DESCRIPTIVE = {"title", "content", "supportedOS"}


def require_schemas() -> Path:
    """The schema folder; skips (or fails under CI) when it is absent."""
    return shared_data_path(*DECLARATIONS)


@cache
def load(relative: str) -> dict[str, Any]:
    with (require_schemas() / relative).open(encoding="utf-8") as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


def schema(declaration_type: str) -> dict[str, Any]:
    document = load(FILES[declaration_type])
    assert document["payload"]["declarationtype"] == declaration_type
    return document


def summary(node: dict[str, Any]) -> dict[str, Any]:
    """The rules of one YAML key, spelt out with Apple's implicit defaults."""
    bounds = node.get("range", {})
    return {
        "key": node["key"],
        "type": node["type"],
        "presence": node.get("presence", "optional"),
        "default": node.get("default"),
        "rangelist": list(node.get("rangelist", [])),
        "min": bounds.get("min"),
        "max": bounds.get("max"),
        "combinetype": node.get("combinetype"),
        "subkeys": [summary(child) for child in node.get("subkeys", [])],
    }


def walk(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every key node in ``nodes``, depth first."""
    found: list[dict[str, Any]] = []
    for node in nodes:
        found.append(node)
        found.extend(walk(node.get("subkeys", [])))
    return found


def problems(declaration: object) -> list[str]:
    """Every way ``declaration`` breaks Apple's schemas, as ``path: problem``; [] if none."""
    if not isinstance(declaration, dict):
        return [f"declaration: {declaration!r} is not a dictionary"]
    found: list[str] = []
    _check_keys(load(BASE)["payloadkeys"], declaration, "", found)
    kind = declaration.get("Type")
    payload = declaration.get("Payload")
    if kind not in FILES:
        found.append(f"Type: {kind!r} has no schema here")
    elif isinstance(payload, dict):
        _check_keys(schema(kind)["payloadkeys"], payload, "Payload", found)
    return found


def _check_keys(
    nodes: list[dict[str, Any]], obj: dict[str, Any], path: str, found: list[str]
) -> None:
    by_name = {node["key"]: node for node in nodes}
    prefix = f"{path}." if path else ""
    found.extend(f"{prefix}{name}: not in the schema" for name in obj if name not in by_name)
    for name, node in by_name.items():
        if name in obj:
            _check_value(node, obj[name], prefix + name, found)
        elif node.get("presence") == "required":
            found.append(f"{prefix}{name}: required but missing")


def _check_value(node: dict[str, Any], value: Any, path: str, found: list[str]) -> None:
    expected = node["type"]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        "<string>": isinstance(value, str),
        "<boolean>": isinstance(value, bool),
        "<integer>": isinstance(value, int) and not isinstance(value, bool),
        "<real>": number,
        "<dictionary>": isinstance(value, dict),
        "<array>": isinstance(value, list),
        "<any>": True,
    }
    if expected not in fits:
        found.append(f"{path}: this reader does not know type {expected}")
        return
    if not fits[expected]:
        found.append(f"{path}: {value!r} is not {expected}")
        return
    if "rangelist" in node and value not in node["rangelist"]:
        found.append(f"{path}: {value!r} not in {node['rangelist']}")
    bounds = node.get("range", {})
    if number and "min" in bounds and value < bounds["min"]:
        found.append(f"{path}: {value!r} below {bounds['min']}")
    if number and "max" in bounds and value > bounds["max"]:
        found.append(f"{path}: {value!r} above {bounds['max']}")
    # A dictionary without subkeys is free-form; an array's one subkey describes its items.
    if isinstance(value, dict) and "subkeys" in node:
        _check_keys(node["subkeys"], value, path, found)
    if isinstance(value, list) and "subkeys" in node:
        for index, item in enumerate(value):
            _check_value(node["subkeys"][0], item, f"{path}[{index}]", found)


def allowed_scopes(declaration_type: str) -> set[str]:
    """The union of ``allowed-scopes`` over every OS (Shared iPad included); both when absent."""
    scopes: set[str] = set()
    listed = False
    for platform in schema(declaration_type)["payload"]["supportedOS"].values():
        for place in (platform, platform.get("sharedipad") or {}):
            if "allowed-scopes" in place:
                listed = True
                scopes.update(place["allowed-scopes"])
    return scopes if listed else {"system", "user"}
