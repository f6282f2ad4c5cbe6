"""CVEs and their CVSS 3.1 scores.

Scoring is the ``cvss`` library's job (it implements FIRST's specification);
this module only accepts the forms users write — with or without the
``CVSS:3.1/`` prefix — and turns its errors into bsi's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cvss import CVSS3
from cvss.exceptions import CVSSError

from bsi.errors import InvalidCvss, InvalidInput

_CVE_ID = re.compile(r"CVE-\d{4}-\d{4,}")
_PREFIX = "CVSS:3.1/"


@dataclass(frozen=True, slots=True)
class CvssScore:
    vector: str
    base_score: float
    severity: str


def score_cvss(vector: str) -> CvssScore:
    """Score a CVSS 3.x vector; ``AV:N/...`` without a prefix is read as 3.1."""
    text = vector.strip() if isinstance(vector, str) else ""
    if text and not text.startswith("CVSS:"):
        text = _PREFIX + text
    try:
        parsed = CVSS3(text)
    except (CVSSError, ValueError, KeyError) as exc:
        raise InvalidCvss(
            f"{vector!r} is not a CVSS 3.x vector: {exc}",
            hint="expected e.g. 'CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N'",
        ) from exc
    return CvssScore(
        vector=parsed.clean_vector(),
        base_score=float(parsed.base_score),
        severity=str(parsed.severities()[0]),
    )


def parse_cve_id(text: str) -> str:
    """A CVE id in canonical upper case, or an error quoting the value."""
    candidate = text.strip().upper() if isinstance(text, str) else ""
    if not _CVE_ID.fullmatch(candidate):
        raise InvalidInput(f"{text!r} is not a CVE id", hint="expected e.g. 'CVE-2026-20643'")
    return candidate
