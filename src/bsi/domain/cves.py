"""CVEs and their CVSS 3.1 scores.

Scoring is the ``cvss`` library's job (it implements FIRST's specification);
this module only accepts the forms users write — with or without the
``CVSS:3.1/`` prefix — and turns its errors into bsi's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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


CvssVectors = tuple[tuple[str, str], ...]
"""CVSS 3.x vectors of some CVEs: ``((cve id, vector), ...)`` sorted by id, each vector
in the ``cvss`` library's clean form; a CVE without a known vector is absent."""


def read_cvss_vectors(value: object, cves: Iterable[str], where: str) -> CvssVectors:
    """``{"CVE-2026-0001": "CVSS:3.1/AV:N/..."}`` (each key one of ``cves``) as
    :data:`CvssVectors`; :class:`InvalidInput` naming ``where`` and the entry otherwise."""
    if not isinstance(value, dict):
        raise InvalidInput(
            f"{where} must be an object of CVE ids to CVSS 3.x vectors, not {value!r}",
            hint='e.g. {"CVE-2026-0001": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}',
        )
    listed = set(cves)
    vectors = {}
    for key, vector in value.items():
        try:
            cve = parse_cve_id(key)
        except InvalidInput as error:
            raise InvalidInput(f"{where}: {error.message}", hint=error.hint) from None
        if cve not in listed:
            raise InvalidInput(
                f"{where}: {key!r} has a vector but is not among the CVEs listed",
                hint="list the CVE in 'cves' too, or drop its vector",
            )
        if not isinstance(vector, str):
            raise InvalidInput(f"{where}.{key}: {vector!r} is not a CVSS 3.x vector")
        try:
            vectors[cve] = score_cvss(vector).vector
        except InvalidCvss as error:
            raise InvalidInput(f"{where}.{key}: {error.message}", hint=error.hint) from None
    return tuple(sorted(vectors.items()))


def dump_cvss_vectors(vectors: CvssVectors) -> dict[str, str]:
    """The object :func:`read_cvss_vectors` reads back."""
    return dict(vectors)


def merge_cvss_vectors(*sources: CvssVectors) -> CvssVectors:
    """One vector per CVE from several listings: the highest-scored where they differ
    (fail closed: a CVE is never shown less severe than one source rates it)."""
    merged: dict[str, CvssScore] = {}
    for vectors in sources:
        for cve, vector in vectors:
            scored = score_cvss(vector)
            if cve not in merged or _rank(scored) > _rank(merged[cve]):
                merged[cve] = scored
    return tuple(sorted((cve, scored.vector) for cve, scored in merged.items()))


def _rank(score: CvssScore) -> tuple[float, str]:
    return (score.base_score, score.vector)
