"""``bsi tuf-client``: bsi's TUF client behind the tuf-conformance client CLI.

The command line is the one the TUF conformance suite drives
(theupdateframework/tuf-conformance, ``CLIENT-CLI.md``)::

    tuf-client --metadata-dir DIR init TRUSTED_ROOT
    tuf-client --metadata-dir DIR --metadata-url URL refresh
    tuf-client --metadata-dir DIR --metadata-url URL --target-name PATH [--target-name PATH ...]
               --target-base-url URL --target-dir DIR download

Exit status 0 on success, 1 on any failure. Options may come in any order
before the command. ``DIR`` keeps non-versioned metadata (``root.json``,
``timestamp.json``, ...); downloaded targets are cached in ``--target-dir``
under their URL-quoted target path and not downloaded again while they match.

It runs the same :class:`~bsi.trust.client.TrustedClient` the agent uses (with
python-tuf's default limits and no bundle size cap, as the suite expects), so
passing the suite is evidence about the agent's client.

Run as ``python -m bsi.trust.conformance_client`` or through :func:`tuf_client_main`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from bsi.errors import BsiError
from bsi.trust.client import ClientLimits, TrustedClient, trust_root

logger = logging.getLogger("bsi.trust.conformance_client")


def build_parser(prog: str = "bsi tuf-client") -> argparse.ArgumentParser:
    """The conformance CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="TUF client (tuf-conformance CLI): init, refresh, download.",
    )
    parser.add_argument("--metadata-dir", required=True, help="trusted metadata directory")
    parser.add_argument("--metadata-url", help="base URL of the repository's metadata")
    parser.add_argument(
        "--target-name", action="append", default=[], help="target path (repeatable, in order)"
    )
    parser.add_argument("--target-base-url", help="base URL of the repository's targets")
    parser.add_argument("--target-dir", help="where verified targets are stored")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="trust the given root metadata file")
    init.add_argument("trusted_root", help="file with the initial root.json")
    commands.add_parser("refresh", help="update top-level metadata")
    commands.add_parser("download", help="download and verify --target-name targets")
    return parser


def _require(value: str | None, option: str, command: str) -> str:
    if not value:
        raise BsiError(f"{command} needs {option}")
    return value


def _run(args: argparse.Namespace) -> None:
    metadata_dir = Path(args.metadata_dir)
    if args.command == "init":
        trust_root(metadata_dir, Path(args.trusted_root).read_bytes(), replace=True)
        print(f"bsi tuf-client: trusting root in {metadata_dir}")
        return

    metadata_url = _require(args.metadata_url, "--metadata-url", args.command)
    if args.command == "refresh":
        client = TrustedClient(
            metadata_dir,
            metadata_url,
            max_target_bytes=None,
            limits=ClientLimits.ngclient_defaults(),
        )
        client.refresh()
        print(f"bsi tuf-client: refreshed metadata in {metadata_dir}")
        return

    targets_url = _require(args.target_base_url, "--target-base-url", "download")
    target_dir = Path(_require(args.target_dir, "--target-dir", "download"))
    if not args.target_name:
        raise BsiError("download needs at least one --target-name")
    client = TrustedClient(
        metadata_dir,
        metadata_url,
        targets_url,
        max_target_bytes=None,
        limits=ClientLimits.ngclient_defaults(),
    )
    for name in args.target_name:
        path = client.download(name, target_dir, filename=quote(name, safe=""))
        print(f"bsi tuf-client: {name} -> {path}")


def tuf_client_main(argv: Sequence[str] | None = None, *, prog: str = "bsi tuf-client") -> int:
    """Run the conformance CLI on ``argv``; return the exit status (0 or 1)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return 0 if exc.code == 0 else 1
    level = logging.WARNING
    if args.verbose >= 2:
        level = logging.DEBUG
    elif args.verbose == 1:
        level = logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except BsiError as exc:
        print(f"bsi tuf-client: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bsi tuf-client: {exc}", file=sys.stderr)
        return 1
    except Exception:  # any failure must be exit 1 for the suite, but is a bug: show it
        logger.exception("bsi tuf-client: unexpected error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(tuf_client_main())
