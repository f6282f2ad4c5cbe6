"""A TUF repository simulator for the trust tests: real keys, real HTTP, an attacker's hand.

:class:`TufRepo` is a bsi repository made with :func:`bsi.trust.init_keys` in a
temporary directory and published with bsi's own publisher code. It is served
by :class:`RepoServer`, a ``http.server`` on 127.0.0.1 (loopback only) that
serves the repository directory as any static host would, plus:

* ``overrides``: a path mapped to bytes served instead of the file (what a
  malicious mirror or a man in the middle sends), or to :data:`ENDLESS` for a
  response that never ends;
* ``requests``: every path asked for, so a test can prove a bundle was never
  even fetched.

:meth:`TufRepo.forge` builds and signs metadata directly with the TUF API and
any key file, for attacks the honest publisher would never produce (an
attacker who holds some keys).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bsi.trust import TrustedClient, available_signers, init_keys, publish_target, trust_root
from bsi.trust._tuf import Metadata, Signer
from bsi.trust.keys import load_signer
from bsi.trust.model import DEFAULT_EXPIRIES, Expiries

#: Marker for an override that streams data forever.
ENDLESS = object()
_CHUNK = b"A" * 65536


class RepoServer:
    """Serves a directory over HTTP on 127.0.0.1, with overrides and a request log."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.overrides: dict[str, bytes | object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(server.directory), **kwargs)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].lstrip("/")
                server.requests.append(path)
                override = server.overrides.get(path)
                if override is None:
                    super().do_GET()
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "application/octet-stream")
                if isinstance(override, bytes):
                    self.send_header("Content-Length", str(len(override)))
                    self.end_headers()
                    self.wfile.write(override)
                    return
                self.end_headers()
                with contextlib.suppress(OSError):
                    while True:
                        self.wfile.write(_CHUNK)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            # shutdown() waits for the next poll: 0.5 s by default, 0.5 s per test
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RepoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def requested(self, prefix: str) -> list[str]:
        """Paths requested that start with ``prefix``."""
        return [path for path in self.requests if path.startswith(prefix)]


@dataclass
class TufRepo:
    """A bsi TUF repository on disk, its keys and the server serving it."""

    base: Path
    server: RepoServer
    thresholds: Mapping[str, int] = field(default_factory=dict)

    @property
    def keys_dir(self) -> Path:
        return self.base / "keys"

    @property
    def repo_dir(self) -> Path:
        return self.base / "repo"

    @property
    def metadata(self) -> Path:
        return self.repo_dir / "metadata"

    @classmethod
    def create(
        cls,
        base: Path,
        *,
        thresholds: Mapping[str, int] | None = None,
        counts: Mapping[str, int] | None = None,
        expires: Expiries | None = None,
        now: datetime | None = None,
    ) -> TufRepo:
        repo = cls(base=base, server=RepoServer(base / "repo"), thresholds=thresholds or {})
        init_keys(
            repo.keys_dir,
            repo.repo_dir,
            thresholds=thresholds,
            counts=counts,
            now=now,
            expires=expires or DEFAULT_EXPIRIES,
        )
        repo.server.start()
        return repo

    # --- keys ---------------------------------------------------------------------

    def key_path(self, role: str, index: int = 1) -> Path:
        return self.keys_dir / f"{role}-{index}.pem"

    def signer(self, role: str, index: int = 1) -> Signer:
        return load_signer(self.key_path(role, index))

    def signers(self, role: str) -> list[Signer]:
        return available_signers(self.repo_dir, self.keys_dir, role)

    # --- honest publishing ----------------------------------------------------------

    def publish(
        self,
        name: str,
        data: bytes,
        *,
        platform: str = "debian",
        prerequisite_build: str = "25D2128",
        supplemental_build: str = "25D771280a",
        extra: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Path:
        """Publish ``data`` as target ``name`` with the targets keys in keys_dir."""
        source = self.base / "bundles" / name.replace("/", "_")
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        custom = {
            "platform": platform,
            "product_version": "26.3.1",
            "extra_version": "(a)",
            "prerequisite_build": prerequisite_build,
            "supplemental_build": supplemental_build,
            **(extra or {}),
        }
        publish_target(
            self.repo_dir,
            self.keys_dir,
            name,
            source,
            custom,
            signers=self.signers("targets"),
            now=now,
        )
        return source

    # --- reading what is served -----------------------------------------------------

    def served(self, relative: str) -> bytes:
        return (self.repo_dir / relative).read_bytes()

    def root(self, version: int | None = None) -> Metadata[Any]:
        if version is None:
            version = max(int(p.name.split(".")[0]) for p in self.metadata.glob("*.root.json"))
        return Metadata.from_file(str(self.metadata / f"{version}.root.json"))

    def current(self, role: str) -> Metadata[Any]:
        """The served version of a non-root role, following timestamp's pins."""
        timestamp = Metadata.from_file(str(self.metadata / "timestamp.json"))
        if role == "timestamp":
            return timestamp
        snapshot_version = timestamp.signed.snapshot_meta.version
        snapshot = Metadata.from_file(str(self.metadata / f"{snapshot_version}.snapshot.json"))
        if role == "snapshot":
            return snapshot
        targets_version = snapshot.signed.meta["targets.json"].version
        return Metadata.from_file(str(self.metadata / f"{targets_version}.targets.json"))

    def bundle_path(self, name: str) -> str:
        """The served (consistent-snapshot) path of target ``name``, relative to the server."""
        target = self.current("targets").signed.targets[name]
        directory, _, base = name.rpartition("/")
        prefix = f"{directory}/" if directory else ""
        return f"targets/{prefix}{target.hashes['sha256']}.{base}"

    # --- the attacker's hand ----------------------------------------------------------

    def forge(self, md: Metadata[Any], *key_files: Path) -> bytes:
        """Sign ``md`` with exactly ``key_files`` (any keys the attacker holds)."""
        md.signatures.clear()
        for path in key_files:
            md.sign(load_signer(path), append=True)
        return md.to_bytes()

    def serve_instead(self, relative: str, data: bytes | object) -> None:
        """Serve ``data`` at ``relative`` instead of the file there."""
        self.server.overrides[relative] = data

    # --- clients --------------------------------------------------------------------

    def client(self, home: Path, **kwargs: Any) -> TrustedClient:
        """A device trusting this repository's first root, with its own metadata dir."""
        metadata_dir = home / "tuf"
        if not (metadata_dir / "root.json").exists():
            trust_root(metadata_dir, (self.metadata / "1.root.json").read_bytes())
        return TrustedClient(
            metadata_dir,
            f"{self.server.url}/metadata/",
            f"{self.server.url}/targets/",
            **kwargs,
        )


def staged(home: Path) -> list[Path]:
    """Everything in a device's staging area (must stay empty after a refusal)."""
    preboot = home / "preboot"
    return sorted(preboot.rglob("*")) if preboot.exists() else []


@contextlib.contextmanager
def running_repo(base: Path, **kwargs: Any) -> Iterator[TufRepo]:
    repo = TufRepo.create(base, **kwargs)
    try:
        yield repo
    finally:
        repo.server.stop()
