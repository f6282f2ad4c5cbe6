"""The one error hierarchy of bsi.

Every error a user can meet is a :class:`BsiError`. Each carries a message that
says what was wrong (quoting the offending value) and, where there is one, a
``hint`` saying what to do about it. Entry points (CLI, HTTP) catch
``BsiError`` alone and turn it into an exit code or a 4xx; anything else is a
bug.

::

    BsiError
    ├── InvalidInput            bad data from a user, a file or a device
    │   ├── InvalidVersion          product version, build or extra version
    │   ├── InvalidDeclaration      a DDM declaration broke a schema rule
    │   ├── InvalidStatusReport     a DDM status report is malformed
    │   └── InvalidCvss             a CVSS vector does not parse
    ├── FeedError               a catalogue feed could not be read or is broken
    ├── NotFound                a named thing does not exist
    ├── Conflict                a write would break a uniqueness rule
    ├── Unauthorized            no credential, or one bsi does not know
    ├── Forbidden               a known credential that may not do this
    │   ├── EnrollmentRefused       an enrollment token unknown, expired or used up
    │   └── IdentityMismatch        a request names one enrollment and proves another
    ├── TooManyRequests         a device over its rate limit; says when to come back
    ├── Unavailable             the database cannot be reached now; says when to retry
    ├── ServerUnavailable       (device side) the bsi server did not answer, or answered 5xx
    └── ServerRefused           (device side) the bsi server refused a request (4xx)
"""

from __future__ import annotations


class BsiError(Exception):
    """Base of every error bsi raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class InvalidInput(BsiError):
    """Input that bsi refuses; nothing was changed because of it."""


class InvalidPolicy(InvalidInput):
    """A rollout plan or maintenance window that is well-formed JSON but breaks a rule
    (overlapping waves, shares that do not reach 100 %, a window with no hours): the
    server answers 422 (RFC 9110 15.5.21) and changes nothing."""


class InvalidVersion(InvalidInput):
    """A product version, build or extra version that does not parse."""


class InvalidDeclaration(InvalidInput):
    """A declaration that breaks a rule of Apple's schema.

    ``path`` names the key path (``Payload.RapidSecurityResponse.Enable``) and
    ``rule`` the rule it broke (``type``, ``presence``, ``rangelist``, ...).
    """

    def __init__(self, message: str, *, path: str, rule: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}", hint=hint)
        self.path = path
        self.rule = rule


class InvalidStatusReport(InvalidInput):
    """A DDM status report that cannot be read."""


class InvalidCvss(InvalidInput):
    """A CVSS vector that does not parse."""


class FeedError(BsiError):
    """A catalogue feed (GDMF, SOFA, bsi) that cannot be fetched or is broken.

    A feed is refused whole: nothing from a broken feed is imported.
    """


class NotFound(BsiError):
    """A named thing (device, supplement, file) does not exist."""


class Conflict(BsiError):
    """The write would break a uniqueness rule (a name already taken, say)."""


class Unauthorized(BsiError):
    """No credential, or one bsi does not know."""


class Forbidden(BsiError):
    """A known credential that may not do what it asked."""


class EnrollmentRefused(Forbidden):
    """An enrollment token that is unknown, expired or used up."""


class IdentityMismatch(Forbidden):
    """A request that names one enrollment but carries another's identity.

    A status report whose ``device.identifier.udid`` or ``serial-number``
    is not the enrollment's, or forwarding headers that do not match how the
    enrollment is known: a replay or a misrouted request, refused and logged
    as a security event.
    """


class TooManyRequests(BsiError):
    """A caller over its rate limit. ``retry_after`` is in whole seconds (RFC 9110 10.2.3)."""

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class Unavailable(BsiError):
    """The database cannot be reached or did not answer in time; nothing was changed
    that was not acknowledged. ``retry_after`` is in whole seconds."""

    def __init__(self, message: str, *, retry_after: int = 5, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class ServerUnavailable(BsiError):
    """Device side: the bsi server could not be reached, answered 5xx or an unreadable
    body. Transient: the agent backs off and tries again (:mod:`bsi.agent.schedule`)."""


class ServerRefused(BsiError):
    """Device side: the bsi server answered 4xx (not 401); the message is the server's own."""
