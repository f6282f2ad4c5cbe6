"""Command-line flags generated from the settings declaration (:mod:`bsi.server.settings`).

``@settings_options(ServerSettings)`` on a command adds one flag per setting
(``--cache-seconds``), with the setting's help text, unit, default and
environment variable in ``--help``, and calls the command with the settings
built by :func:`bsi.server.settings.load`: flags given, then ``BSI_*``
variables, then the defaults. No flag, default or help text is written here.

Every flag takes text that the declaration validates, so a bad value gets the
same message whether it came from a flag or a variable, naming which.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_args

import typer
from rich.markup import escape

from bsi.server.settings import (
    DatabaseSettings,
    bounds,
    describe_default,
    env_name,
    flag_name,
    load,
    meaning,
    unit_of,
)

Settings = TypeVar("Settings", bound=DatabaseSettings)

_PARAMETER = "settings"
"""The decorated command's parameter that receives the settings."""


def settings_options(
    model: type[Settings],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give the decorated command a flag per field of ``model``; it is called with
    ``settings=`` the loaded ``model`` and its own parameters as typer parsed them."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = inspect.signature(command, eval_str=True)
        if _PARAMETER not in own.parameters:
            raise TypeError(f"{command.__name__} takes no {_PARAMETER!r} parameter")
        flags = [_parameter(model, name) for name in model.model_fields]

        @functools.wraps(command)
        def run(**values: Any) -> None:
            given = {}
            for name in model.model_fields:
                value = values.pop(name)
                if value is not None and value != []:
                    given[name] = value
            command(**values, settings=load(model, given))

        others = [p for p in own.parameters.values() if p.name != _PARAMETER]
        run.__signature__ = own.replace(parameters=[*others, *flags])  # type: ignore[attr-defined]
        return run

    return decorate


def _parameter(model: type[DatabaseSettings], name: str) -> inspect.Parameter:
    field = model.model_fields[name]
    unit = unit_of(model, name)
    repeated = _is_sequence(field.annotation)
    limits = bounds(model, name)
    text = (
        f"{meaning(model, name)} Unit: {unit.name}{f' ({limits})' if limits else ''}. "
        f"Default: {describe_default(model, name)}. Env: {env_name(name)}."
    )
    option = typer.Option(
        flag_name(name),
        help=escape(text),
        metavar=unit.placeholder,
        show_default=False,
    )
    kind = list[str] | None if repeated else str | None
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option]
    )


def _is_sequence(annotation: object) -> bool:
    return getattr(annotation, "__origin__", None) is tuple or any(
        getattr(arg, "__origin__", None) is tuple for arg in get_args(annotation)
    )
