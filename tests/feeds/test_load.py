"""Loading: files and URLs, the format told from content, sizes and HTTP failures refused.

URLs are served by a real HTTP server on 127.0.0.1 only, from a temporary
directory; nothing leaves the machine.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bsi.domain.versions import Build
from bsi.errors import FeedError
from bsi.feeds.gdmf import parse_gdmf
from bsi.feeds.load import load_catalog, load_catalogs, read_catalog

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


class FeedHandler(SimpleHTTPRequestHandler):
    """Files from the served directory, plus a redirect and a body without a declared length."""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/gdmf.json")
            self.end_headers()
        elif self.path.startswith("/undeclared/"):
            body = Path(self.directory, self.path.removeprefix("/undeclared/")).read_bytes()
            self.send_response(200)
            self.end_headers()  # HTTP/1.0: the body runs until the connection closes
            self.wfile.write(body)
        else:
            super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: the tests that refuse a body hang up on the server on purpose."""


@pytest.fixture
def served(tmp_path: Path, sofa_dir: Path) -> Path:
    """A temporary directory holding a copy of Apple's real GDMF document."""
    shutil.copyfile(sofa_dir / "gdmf_cached.json", tmp_path / "gdmf.json")
    (tmp_path / "page.html").write_text("<html>not a feed</html>")
    return tmp_path


@pytest.fixture
def base_url(served: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    server = QuietServer(("127.0.0.1", 0), partial(FeedHandler, directory=str(served)))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- format detection ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "platforms", "supplements"),
    [
        ("gdmf_cached.json", {"macOS", "iOS", "visionOS", "tvOS", "watchOS"}, 3),
        ("macos_data_feed.json", {"macOS"}, 2),
        ("ios_data_feed.json", {"iOS"}, 1),
        ("bsi_history.ndjson", {"macOS", "iOS", "visionOS"}, 3),
    ],
)
def test_each_real_file_is_recognised(
    sofa_dir: Path, name: str, platforms: set[str], supplements: int
) -> None:
    catalog = load_catalog(sofa_dir / name)

    assert catalog.platforms() == platforms
    assert len(catalog.supplements) == supplements
    assert catalog.source == str(sofa_dir / name)


def test_a_bsi_catalogue_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(
        '{"format": "bsi-catalog/1", "releases": [{"platform": "debian", "version": "12.7"}]}'
    )

    assert [r.platform for r in load_catalog(str(path)).releases] == ["debian"]


def test_several_feeds_merge_into_one_catalogue(sofa_dir: Path) -> None:
    names = ["gdmf_cached.json", "macos_data_feed.json", "ios_data_feed.json"]

    catalog = load_catalogs(sofa_dir / name for name in names)

    universal = catalog.supplement_by_build("macOS", Build.parse("25D771280a"))
    assert universal is not None
    assert universal.cves == ("CVE-2026-20643",)
    assert "J413AP" in catalog.device_ids_by_model["Mac14,2"]
    assert catalog.source == " + ".join(str(sofa_dir / name) for name in names)


def test_no_locations_is_refused() -> None:
    with pytest.raises(FeedError, match="no catalogue given"):
        load_catalogs([])


# -- refusals of files ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not JSON: Expecting value at line 1 column 1"),
        (b"<html>\n", "not JSON"),
        (b'{"PublicAssetSets": {"macOS": [}', "not JSON: Expecting value at line 1 column 32"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text"),
        (b"[1, 2]", "not a catalogue bsi knows; found [1, 2]"),
        (b'{"etag": "x"}', "not a catalogue bsi knows; found an object with keys ['etag']"),
        (b'{"format": "other/1"}', "format: 'other/1' is not a catalogue format"),
    ],
)
def test_content_that_is_no_catalogue_is_refused(content: bytes, expected: str) -> None:
    with pytest.raises(FeedError) as refused:
        read_catalog(content, source="feed.json")

    assert str(refused.value).startswith("feed.json: ")
    assert expected in str(refused.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FeedError, match="cannot read: No such file"):
        load_catalog(tmp_path / "absent.json")


def test_a_file_over_the_size_limit_is_refused(sofa_dir: Path) -> None:
    with pytest.raises(FeedError, match="larger than the 1000-byte limit"):
        load_catalog(sofa_dir / "gdmf_cached.json", max_bytes=1000)


def test_one_broken_feed_refuses_the_lot(sofa_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text(
        '{"OSVersions": [{"Latest": {"ProductName": "macOS"},'
        ' "SecurityReleases": [{"ProductVersion": "26.x"}]}]}'
    )

    with pytest.raises(FeedError, match=r"OSVersions\[0\]\.SecurityReleases\[0\]\.ProductVersion"):
        load_catalogs([sofa_dir / "gdmf_cached.json", broken], max_bytes=10_000_000)


# -- URLs -----------------------------------------------------------------------


def test_a_feed_is_loaded_over_http(base_url: str, gdmf_document: Any) -> None:
    catalog = load_catalog(f"{base_url}/gdmf.json")

    expected = parse_gdmf(gdmf_document, source=f"{base_url}/gdmf.json")
    assert catalog == expected


def test_redirects_are_followed(base_url: str, gdmf_document: Any) -> None:
    catalog = load_catalog(f"{base_url}/moved")

    assert catalog.supplements == parse_gdmf(gdmf_document, source="").supplements


def test_a_missing_url_is_refused_with_its_status(base_url: str) -> None:
    with pytest.raises(FeedError, match=r"/absent\.json: the server answered HTTP 404"):
        load_catalog(f"{base_url}/absent.json")


def test_a_page_that_is_not_json_is_refused(base_url: str) -> None:
    with pytest.raises(FeedError, match=r"page\.html: not JSON"):
        load_catalog(f"{base_url}/page.html")


@pytest.mark.parametrize("path", ["/gdmf.json", "/undeclared/gdmf.json"])
def test_a_body_over_the_size_limit_is_refused(base_url: str, path: str) -> None:
    # With a Content-Length the refusal comes before reading; without one, while streaming.
    with pytest.raises(FeedError, match="larger than the 4096-byte limit"):
        load_catalog(base_url + path, max_bytes=4096)


def test_an_unreachable_server_is_refused() -> None:
    # Port 9 on loopback (discard) is closed on test machines; nothing leaves the host.
    with pytest.raises(FeedError, match="cannot fetch"):
        load_catalog("http://127.0.0.1:9/gdmf.json", timeout=5)


def test_only_http_urls_are_fetched() -> None:
    with pytest.raises(FeedError, match="use http:// or https://"):
        load_catalog("ftp://127.0.0.1/gdmf.json")
