"""Cryptexes: the sealed, content-addressed bundles that carry Linux supplements.

``spec`` reads what the publisher declares, ``build`` finds the changed files
and seals them, ``manifest`` is the bundle's description (pure, no I/O) and
``verify`` reads a bundle without trusting it. Signing is not here: TUF signs
the bundle's bytes, and calls :func:`verify_bundle` after checking them.
"""

from bsi.cryptex.build import (
    BuildResult,
    Change,
    build_bundle,
    changes_from_list,
    diff_trees,
    manifest_for,
)
from bsi.cryptex.errors import InvalidBundle, InvalidSupplement
from bsi.cryptex.manifest import (
    FORMAT,
    Action,
    Component,
    CveEntry,
    FileEntry,
    HealthCheck,
    Manifest,
    Relaunch,
    cumulative_check,
    describe,
)
from bsi.cryptex.spec import ComponentSpec, Owner, SupplementSpec, load_spec, parse_spec
from bsi.cryptex.verify import DEFAULT_MAX_BYTES, extract_payloads, read_manifest, verify_bundle

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "Action",
    "BuildResult",
    "Change",
    "Component",
    "ComponentSpec",
    "CveEntry",
    "FileEntry",
    "HealthCheck",
    "InvalidBundle",
    "InvalidSupplement",
    "Manifest",
    "Owner",
    "Relaunch",
    "SupplementSpec",
    "build_bundle",
    "changes_from_list",
    "cumulative_check",
    "describe",
    "diff_trees",
    "extract_payloads",
    "load_spec",
    "manifest_for",
    "parse_spec",
    "read_manifest",
    "verify_bundle",
]
