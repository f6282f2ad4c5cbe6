"""Loading a catalogue from a file or an http(s) URL, whatever its format.

The format is told from the content, not the name, because feeds are saved
and mirrored under any name (SOFA caches GDMF as ``gdmf_cached.json``). Sizes
are capped while reading, so a misconfigured URL cannot exhaust memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bsi.domain.catalog import Catalog
from bsi.errors import FeedError
from bsi.feeds.bsi_catalog import looks_like_bsi_catalog, parse_bsi_catalog
from bsi.feeds.gdmf import looks_like_gdmf, parse_gdmf
from bsi.feeds.sofa import parse_sofa, parse_sofa_history
from bsi.strict import quote, read_json

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_URL_SCHEMES = ("http", "https")


def load_catalog(
    location: str | Path,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Catalog:
    """The catalogue at a path or an http(s) URL, named after ``location`` in errors."""
    source = str(location)
    if isinstance(location, str) and "://" in location:
        data = _fetch(location, timeout=timeout, max_bytes=max_bytes)
    else:
        data = _read_file(Path(location), max_bytes=max_bytes)
    return read_catalog(data, source=source)


def load_catalogs(
    locations: Iterable[str | Path],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Catalog:
    """Several catalogues laid over each other in order: a later one wins on the same build.

    Every location is read before any is merged, so one broken feed refuses
    the lot rather than leaving a catalogue that silently lacks it.
    """
    catalogs = [load_catalog(loc, timeout=timeout, max_bytes=max_bytes) for loc in locations]
    if not catalogs:
        raise FeedError("no catalogue given", hint="name at least one file or URL")
    merged = catalogs[0]
    for catalog in catalogs[1:]:
        merged = merged.merged(catalog)
    return merged


def read_catalog(data: bytes, *, source: str) -> Catalog:
    """The catalogue in raw feed bytes: JSON (GDMF, SOFA, bsi) or SOFA's NDJSON history."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise FeedError(f"{source}: not UTF-8 text (byte {error.start})") from None
    if _is_json_lines(text):
        return parse_sofa_history(text, source=source)
    document = read_json(text, source=source, error=FeedError)
    if isinstance(document, dict) and "first_seen" in document:
        return parse_sofa_history(text, source=source)
    return parse_document(document, source=source)


def _is_json_lines(text: str) -> bool:
    """Whether ``text`` is NDJSON: a first line that is a whole JSON value, more after it.

    Only a sniff; the lines are then read strictly one by one.
    """
    first, _, rest = text.strip().partition("\n")
    if not rest.strip():
        return False
    try:
        json.loads(first)
    except (ValueError, RecursionError):  # not a whole value (or not one bsi would accept)
        return False
    return True


def parse_document(document: object, *, source: str) -> Catalog:
    """The catalogue in a decoded JSON document of any format bsi knows."""
    if looks_like_bsi_catalog(document):
        return parse_bsi_catalog(document, source=source)
    if looks_like_gdmf(document):
        return parse_gdmf(document, source=source)
    if isinstance(document, dict) and "OSVersions" in document:
        return parse_sofa(document, source=source)
    if isinstance(document, dict):
        found = f"an object with keys {quote(sorted(document))}"
    else:
        found = quote(document)
    raise FeedError(
        f"{source}: not a catalogue bsi knows; found {found}",
        hint="expected Apple's GDMF document, a SOFA v2 feed, SOFA's bsi_history.ndjson "
        "or a bsi catalogue",
    )


def _read_file(path: Path, *, max_bytes: int) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise FeedError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise _too_large(str(path), max_bytes)
    return data


def _fetch(url: str, *, timeout: float, max_bytes: int) -> bytes:
    if urlsplit(url).scheme not in _URL_SCHEMES:
        raise FeedError(f"{url}: cannot fetch this kind of URL", hint="use http:// or https://")
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", url) as response,
        ):
            if not response.is_success:
                raise FeedError(
                    f"{url}: the server answered HTTP {response.status_code} "
                    f"{response.reason_phrase}".rstrip()
                )
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise _too_large(url, max_bytes)
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise _too_large(url, max_bytes)
            return bytes(body)
    except httpx.HTTPError as error:
        raise FeedError(f"{url}: cannot fetch: {error}") from None


def _too_large(source: str, max_bytes: int) -> FeedError:
    return FeedError(
        f"{source}: larger than the {max_bytes}-byte limit",
        hint="raise max_bytes if this feed really is that large",
    )
