"""Errors of the cryptex package, in bsi's one hierarchy.

Two kinds, because two different people act on them: a broken *bundle* is
the device's (or the verifier's) problem — it must be refused whole and never
staged — while a broken *supplement source* (spec file, trees, file list, a
letter that is not cumulative) is the publisher's to fix before anything is
written. Both are :class:`~bsi.errors.InvalidInput`, so the CLI and the server
report them without special cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bsi.errors import InvalidInput


class InvalidBundle(InvalidInput):
    """A bundle or its manifest breaks a rule; nothing in it may be used.

    ``where`` names the offending field or member (``file 'usr/lib/x.so'``,
    ``member 'files/a'``), and the message quotes the value.
    """

    def __init__(self, message: str, *, where: str = "", hint: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.where = where


class InvalidSupplement(InvalidInput):
    """What the publisher gave ``bsi supplement build`` cannot make a supplement."""


@contextmanager
def publisher_input(source: str) -> Iterator[None]:
    """Report a manifest rule broken by the publisher's input as theirs to fix.

    The manifest's own checks raise :class:`InvalidBundle`; when the values
    came from a spec file or a tree rather than a downloaded bundle, the same
    refusal is re-raised as :class:`InvalidSupplement` naming that source.
    """
    try:
        yield
    except InvalidBundle as error:
        raise InvalidSupplement(f"{source}: {error.message}", hint=error.hint) from None
